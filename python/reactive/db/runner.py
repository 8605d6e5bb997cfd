"""Running functions: argument validation, transactions, retries, log lines.

* A query runs in a read-only transaction at the visible timestamp.
* A mutation runs in a read-write transaction and commits; a ``WriteConflict`` (or a
  transaction too old for the write log) re-runs it from the start, with exponential backoff
  and jitter, up to ``max_attempts`` times; the last error says it was a write conflict.
  ``ctx.now`` and ``ctx.random`` are fixed for the whole run, retries included. The result is
  returned only once the commit is durable. Any exception from the handler (``ConvexError``
  or another) discards the transaction: a failed mutation writes nothing.
* An action runs outside any transaction; ``ctx.run_*`` run other functions.
* Handlers never hold the event loop: ``async def`` queries and mutations run inline under
  a guard that moves a busy one to worker threads, everything else runs on worker threads
  (:mod:`reactive.db.executor`), always with time limits: ``function_time_limit_s``
  (queries and mutations, 1 s as Convex) and ``action_time_limit_s`` (10 minutes). A run
  past its limit fails with ``FunctionTimeoutError`` and is stopped; a mutation stopped so
  commits nothing. Calls an action makes (``ctx.run_query``...) run within the action's
  own limit.

Source: ARCHITECTURE.md "Life of a commit"; Convex's OCC retry behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reactive import _core, logs
from reactive.db import system
from reactive.db.context import (
    ActionCtx,
    DatabaseReader,
    DatabaseWriter,
    Env,
    MutationCtx,
    QueryCtx,
)
from reactive.db.executor import (
    Executor,
    Offload,
    in_worker,
    inline_first_step,
    inline_possible,
    must_wait_turn,
    run_inline_rest,
    wait_turn,
)
from reactive.errors import (
    ArgumentValidationError,
    FunctionNotFoundError,
    InvalidValueError,
    ReadOnlyError,
    RetryableError,
    ValidationError,
    WriteConflict,
)
from reactive.functions import Function, FunctionKind
from reactive.http_router import HttpAction, HttpActionResponseError
from reactive.pytypes import plain_document, pydantic_check, to_value
from reactive.schema import ValidationFailure, type_name
from reactive.sync.messages import loads

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = ["ActionOutcome", "MutationOutcome", "QueryOutcome", "Runner"]

log = logging.getLogger("reactive.runner")

CATCH_UP_WAIT_S = 0.5
"""How long a follower waits to apply what a refused transaction missed (seconds)."""


@dataclass
class QueryOutcome:
    """A query run: its value (or error), log lines, transaction and journal.

    The journal is the end cursor of a paginated query, kept for its re-runs.
    """

    value: Any
    log_lines: list[str]
    txn: _core.Transaction
    error: BaseException | None = None
    journal: str | None = None
    usage: dict[str, int] | None = None  # what it read (when the slow log asks)


@dataclass
class MutationOutcome:
    """A committed mutation: its value, log lines, commit timestamp and attempts made.

    ``replayed`` is true when the result was recorded by an earlier run of the same client
    request (nothing ran; ``ts`` is then a snapshot at or after that run's commit).
    """

    value: Any
    log_lines: list[str]
    ts: int
    attempts: int = 1
    replayed: bool = False
    usage: dict[str, int] | None = None  # what it read and wrote (when the slow log asks)


@dataclass
class ActionOutcome:
    """An action run: its value and log lines."""

    value: Any
    log_lines: list[str] = field(default_factory=list)


def _validate_args(fn: Function[Any], args: Any, ids: Any) -> dict[str, Any]:
    if args is None:
        args = {}
    args = plain_document(args)
    if not isinstance(args, dict):
        raise ArgumentValidationError(
            f"arguments of {fn.path} must be an object (dict), found {type_name(args)}"
        )
    _core.check_value(args, "args")
    if fn.args is None:
        return args
    try:
        checked = fn.args.check(args, "", ids)
    except ValidationFailure as failure:
        raise ArgumentValidationError(f"invalid arguments for {fn.path}: {failure}") from None
    if fn.args_type is not None:
        problem = pydantic_check(fn.args_type, checked)
        if problem is not None:
            raise ArgumentValidationError(f"invalid arguments for {fn.path}: {problem}")
    return checked  # type: ignore[no-any-return]


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_result(fn: Function[Any], value: Any, ids: Any) -> Any:
    # Scalars need no trip into the core (the common results: None, an id, a number).
    scalar = value is None or isinstance(value, (str, float, bool))
    small_int = isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX
    if not (scalar or small_int):
        try:
            _core.check_value(value, f"return value of {fn.path}")
        except InvalidValueError:
            # Dataclass or pydantic instances (converted only when present: results are
            # checked on every run).
            converted = to_value(value)
            if converted is value:
                raise
            value = converted
            _core.check_value(value, f"return value of {fn.path}")
    if fn.returns is not None:
        try:
            value = fn.returns.check(value, "", ids)
        except ValidationFailure as failure:
            raise ArgumentValidationError(
                f"return value of {fn.path} does not match its validator: {failure}"
            ) from None
    return value


def _attach_log_lines(exc: BaseException, lines: list[str]) -> None:
    """Keep what a failed mutation or action printed: callers read ``exc.log_lines``."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.log_lines = lines  # type: ignore[attr-defined]


def _not_found(path: str) -> str:
    """Convex's words for a public function that is not there (or is internal)."""
    return (
        f"Could not find public function for '{path[:200]}'. Did you forget to run "
        "`npx convex dev` or `npx convex deploy`?"
    )


async def _call(fn: Function[Any], ctx: Any, args: dict[str, Any]) -> Any:
    result = fn.handler(ctx, **args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Runner:
    """Runs one database's functions.

    Args:
        db: The database.
        max_attempts: Attempts for a mutation that keeps conflicting.
        backoff_s: First backoff (seconds); doubles per attempt, capped at ``max_backoff_s``,
            with full jitter.
        function_time_limit_s: Time limit of a query or mutation run (seconds).
        action_time_limit_s: Time limit of an action run (seconds).
        function_threads: Queries and mutations running at once (worker threads).
        action_threads: Actions running at once (worker threads).
    """

    def __init__(
        self,
        db: Database,
        max_attempts: int = 32,
        backoff_s: float = 0.0005,
        max_backoff_s: float = 0.05,
        function_time_limit_s: float = 1.0,
        action_time_limit_s: float = 600.0,
        function_threads: int = 32,
        action_threads: int = 256,
    ) -> None:
        self._db = db
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.function_time_limit_s = function_time_limit_s
        self.action_time_limit_s = action_time_limit_s
        self._functions = Executor("functions", max_threads=function_threads)
        self._actions = Executor("actions", max_threads=action_threads)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Functions too busy to run inline on the event loop (see _invoke).
        self._on_workers: set[str] = set()
        self._resolved: dict[str, Function[Any]] = {}
        self._async_handlers: dict[Any, bool] = {}
        logs.install()

    def close(self) -> None:
        """Stop the idle worker threads (runs in progress end on their own)."""
        self._functions.close()
        self._actions.close()

    async def _invoke(
        self, fn: Function[Any], ctx: Any, args: dict[str, Any], limit_s: float | None = None
    ) -> Any:
        """Call the handler within its time limit, inline or on a worker thread.

        Inline under the loop guard, or on a worker thread (see
        :mod:`reactive.db.executor`); in place when nested in an action.

        Raises:
            Offload: an inline run held the loop too long (the caller runs it again).
        """
        if in_worker():
            return await _call(fn, ctx, args)  # inside an action: its thread, its limit
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        handler = fn.handler
        kind = fn.kind
        if kind == "action":
            return await self._actions.run(
                lambda: handler(ctx, **args), self.action_time_limit_s, f"{kind} {fn.path}"
            )
        limit = self.function_time_limit_s if limit_s is None else limit_s
        if (
            limit_s is None
            and fn.path not in self._on_workers
            and self._is_async(handler)
            and inline_possible()
        ):
            if must_wait_turn():
                # Inline runs had this turn of the loop long enough, or others wait for
                # a turn: let it serve its sockets first, and the waiting runs in order
                # (executor.TURN_BUDGET_S).
                await wait_turn()
            coro = handler(ctx, **args)
            finished, state = inline_first_step(coro)
            if finished:
                return state  # the common handler: one step, never suspended
            return await run_inline_rest(coro, state, limit, kind, fn.path)
        return await self._functions.run(
            lambda: handler(ctx, **args), limit, f"{kind} {fn.path}", self.function_time_limit_s
        )

    def _is_async(self, handler: Any) -> bool:
        """``inspect.iscoroutinefunction(handler)``, remembered per handler."""
        try:
            answer = self._async_handlers.get(handler)
        except TypeError:  # an unhashable callable
            return inspect.iscoroutinefunction(handler)
        if answer is None:
            answer = inspect.iscoroutinefunction(handler)
            if len(self._async_handlers) < 4096:
                self._async_handlers[handler] = answer
        return answer

    def _offloaded(self, fn: Function[Any], off: Offload) -> float:
        """Send ``fn`` to worker threads from now on; the time its retry has left."""
        if fn.path not in self._on_workers:
            self._on_workers.add(fn.path or "")
            log.info(
                "%s %s held the event loop for %.0f ms: it runs on worker threads from now on",
                fn.kind,
                fn.path,
                off.elapsed_s * 1000,
            )
        return max(0.001, self.function_time_limit_s - off.elapsed_s)

    async def _on_loop(self, coro: Any) -> Any:
        """Await ``coro`` on the database's event loop (from an action's worker thread)."""
        loop = self._loop
        if not in_worker() or loop is None:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def resolve(
        self,
        function: str | Function[Any],
        kind: FunctionKind,
        internal_ok: bool,
        client_words: bool = False,
        admin: bool = False,
    ) -> Function[Any]:
        """The function at a path (or the function itself), checked for kind and visibility.

        ``client_words``: for a remote client, a missing and an internal function get the
        same message, Convex's (the client learns nothing of internal functions); an
        embedded caller is told which it is. ``admin``: the caller holds the admin key, so
        the ``_system/`` functions (:mod:`reactive.admin`) are there for it.

        Raises:
            FunctionNotFoundError: no such function, the wrong kind, or internal when the
                caller may only call public functions.
        """
        if isinstance(function, Function):
            if function.path is None:
                raise FunctionNotFoundError(f"{function!r} is not a function of this app")
            path = function.path
        else:
            path = function
        fn = self._resolved.get(path) if isinstance(path, str) else None
        if fn is None and isinstance(path, str) and path.startswith("_system/"):
            from reactive.admin import system_function

            system = system_function(path) if admin else None
            if system is None:
                raise FunctionNotFoundError(_not_found(path))
            if system.kind != kind:
                raise FunctionNotFoundError(f"{system.path!r} is a {system.kind}, not a {kind}")
            return system
        if fn is None:
            try:
                fn = self._db._app.lookup(path)
            except FunctionNotFoundError:
                if client_words:
                    raise FunctionNotFoundError(_not_found(str(path))) from None
                raise
            if len(self._resolved) < 4096:
                self._resolved[path] = fn
        if fn.internal and not internal_ok:
            if client_words:
                raise FunctionNotFoundError(_not_found(str(path)))
            raise FunctionNotFoundError(
                f"could not find public function for {fn.path!r} (it is internal)"
            )
        if fn.kind != kind:
            raise FunctionNotFoundError(
                f"{fn.path!r} is a {fn.kind}, not a {kind}; call it with {'db.' + fn.kind}(...)"
            )
        return fn

    async def run_query(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None = None,
        ts: int | None = None,
        journal: str | None = None,
    ) -> QueryOutcome:
        """Run a query at the visible timestamp (or at ``ts``, a point-in-time read).

        On a follower, without ``ts``, it first waits for the commits acknowledged before
        the call (``Database.read_barrier``).

        ``journal`` is the journal of an earlier run of this query (spec §6.9).

        Errors of the function and of its arguments are returned in ``outcome.error``
        (with the transaction, so a subscription can still watch what the failed run
        read); a snapshot outside the retention window is raised. Each run is reported to
        the database's observer (metrics, slow log, run records).
        """
        started, t0 = time.time(), time.perf_counter()
        try:
            outcome = await self._run_query(fn, args, identity, ts, journal)
        except BaseException as exc:
            self._report(fn, identity, started, t0, exc, getattr(exc, "log_lines", ()), None)
            raise
        self._report(fn, identity, started, t0, outcome.error, outcome.log_lines, outcome.usage)
        return outcome

    async def run_action(
        self, fn: Function[Any], args: Any, identity: dict[str, Any] | None = None
    ) -> ActionOutcome:
        """Run an action; ``ctx.run_*`` calls may reach internal functions (reported)."""
        started, t0 = time.time(), time.perf_counter()
        try:
            outcome = await self._run_action(fn, args, identity)
        except BaseException as exc:
            self._report(fn, identity, started, t0, exc, getattr(exc, "log_lines", ()), None)
            raise
        self._report(fn, identity, started, t0, None, outcome.log_lines, None)
        return outcome

    def _report(
        self,
        fn: Function[Any],
        identity: dict[str, Any] | None,
        started: float,
        t0: float,
        error: BaseException | None,
        lines: list[str] | tuple[str, ...],
        usage: dict[str, int] | None,
    ) -> None:
        """Report a run to the observer (metrics, slow log, run records).

        ``started`` is the epoch time it began, ``t0`` its ``perf_counter`` then. A run
        ended by a ``BaseException`` (a cancelled caller) is reported with it as its error.
        """
        self._db._observer.function_ran(
            fn.kind,
            fn.path,
            started,
            time.perf_counter() - t0,
            error,
            lines,
            identity,
            usage,
        )

    async def _run_query(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None = None,
        ts: int | None = None,
        journal: str | None = None,
    ) -> QueryOutcome:
        """The run behind :meth:`run_query` (unreported)."""
        if ts is None and (self._db._follower is not None or self._db._strict_reads):
            # A cluster's process reads what every process acknowledged before this call.
            await self._db.read_barrier()
        engine = self._db._engine
        txn = engine.begin(True) if ts is None else engine.begin_at(ts)
        reader = DatabaseReader(txn, self._db, journal)
        try:
            args = _validate_args(fn, args, reader._ids)
        except ValidationError as exc:
            return QueryOutcome(None, [], txn, exc, None)
        now, seed = time.time() * 1000.0, random.getrandbits(64)
        limit_s: float | None = None
        while True:
            ctx = QueryCtx(reader, now, seed, identity)
            collector = logs.LogCollector()
            token = logs.collecting(collector)
            try:
                value = await self._invoke(fn, ctx, args, limit_s)
                value = _check_result(fn, value, reader._ids)
            except Offload as off:
                # Too busy for the event loop: again from the start, on a worker thread.
                limit_s = self._offloaded(fn, off)
                txn = engine.begin_at(txn.begin_ts)
                reader = DatabaseReader(txn, self._db, journal)
                continue
            except Exception as exc:
                return QueryOutcome(None, collector.finish(), txn, exc, reader._journal_out)
            finally:
                logs.reset(token)
            usage = txn.usage() if self._db._observer.wants_usage() else None
            return QueryOutcome(
                value, collector.finish(), txn, None, reader._journal_out, usage=usage
            )

    async def run_mutation(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None = None,
        request: tuple[str, int] | None = None,
        on_commit: Callable[[int], None] | None = None,
        before_commit: Callable[[_core.Transaction], None] | None = None,
    ) -> MutationOutcome:
        """Run a mutation to a durable commit, retrying conflicts (reported as a run).

        ``request`` (session id, request id) makes it exactly-once across client replays:
        its result is recorded in ``_session_requests`` with its writes, and a replay of
        a recorded request returns the recorded result without running (spec §6.8).
        ``on_commit(ts)`` is called once the commit has its timestamp, before it is
        durable (the sync session orders its messages by it). ``before_commit(txn)`` runs
        after the handler, in its transaction (the scheduler records a run there).

        One coroutine from the call to the commit's future (the hot path of every write):
        the report to the observer is made here, not by a wrapper.

        Raises:
            ReadOnlyError: the database follows another process's log (a read replica).
            WriteConflict: still conflicting after ``max_attempts``.
            CommitOutcomeUnknownError: commits stopped after an earlier commit's outcome
                became unknown; reopen the database.
            Exception: whatever the handler raised (nothing was written).
        """
        started, t0 = time.time(), time.perf_counter()
        db = self._db
        remote = db._follower is not None and db._forward_commit is not None
        if remote and request is None:
            # A cluster's follower runs it here and the writer commits it: with a request
            # id, recorded with its commit, so a transaction whose answer was lost (the
            # writer died, a failover) is answered from the record when run again, never
            # committed twice.
            request = (system.forwarded_session(), 0)
        try:
            if db._follower is not None and not remote:
                db._check_writable(f"mutation {fn.path}")
            outcome: MutationOutcome | None = None
            engine = db._engine
            now = started * 1000.0
            seed = random.getrandbits(64)
            last: RetryableError | None = None
            checked = _validate_args(fn, args, db._id_checker)
            flusher = db._flusher
            observer = db._observer
            limit_s: float | None = None
            attempt = 0
            while attempt < self.max_attempts:
                attempt += 1
                # Once commits have stopped (an unknown outcome), say so rather than run the
                # mutation, or let it retry conflicts with commits that will never be written.
                stopped = flusher.stopped_error()
                if stopped is not None:
                    raise stopped
                txn = engine.begin(False)
                writer = DatabaseWriter(txn, db)
                ctx = MutationCtx(writer, now, seed, identity)
                collector = logs.LogCollector()
                token = logs.collecting(collector)
                try:
                    if request is not None:
                        done = system.find_session_request(
                            txn, *request, identity=identity, path=fn.path
                        )
                        if done is not None:
                            value = _core.from_convex_json(loads(done["value"]), "result")
                            seen = max(txn.begin_ts, db.published_timestamp)
                            outcome = MutationOutcome(
                                value, list(done["logLines"]), seen, attempt, True
                            )
                            break
                    value = await self._invoke(fn, ctx, checked, limit_s)
                    value = _check_result(fn, value, writer._ids)
                    if request is not None:
                        system.record_session_request(
                            txn,
                            *request,
                            _core.convex_json(value, result=True),
                            list(collector.lines),
                            identity=identity,
                            path=fn.path,
                        )
                    if before_commit is not None:
                        before_commit(txn)
                    usage = txn.usage() if observer.wants_usage() else None
                    if db._follower is not None:
                        # A cluster's follower: the writer validates and commits it.
                        scheduled = ctx._scheduler is not None and bool(ctx._scheduler.scheduled)
                        ts = await db._forward_commit(txn.forwarded(), scheduled)
                        if ts is None and db._follower is None:
                            ts = engine.commit(txn)  # this process leads now
                    else:
                        ts = engine.commit(txn)
                except Offload as off:
                    # Too busy for the event loop: this attempt's writes are dropped (never
                    # committed) and it runs again from the start on a worker thread.
                    limit_s = self._offloaded(fn, off)
                    attempt -= 1
                    continue
                except RetryableError as exc:
                    last = exc
                    if isinstance(exc, WriteConflict):
                        observer.write_conflict()
                    stopped = flusher.stopped_error()
                    if stopped is not None:
                        raise stopped from exc
                    if db._follower is not None:
                        # The writer refused it: run again once this process has applied
                        # the commit it conflicted with (or what the log holds now).
                        await self._catch_up_after(exc)
                    delay = min(self.backoff_s * (2 ** (attempt - 1)), self.max_backoff_s)
                    await asyncio.sleep(delay * random.random())
                    continue
                except ReadOnlyError as exc:
                    if db._follower is None or db._forward is None:
                        _attach_log_lines(exc, collector.finish())
                        raise
                    # Something only the writer does (creating a table): the whole call
                    # runs there, with the same request id.
                    forwarded = await db._forward(fn, args, identity, request, on_commit)
                    if forwarded is None:
                        attempt -= 1  # this process leads now: run it here
                        continue
                    outcome = forwarded
                    break
                except Exception as exc:
                    _attach_log_lines(exc, collector.finish())
                    raise
                finally:
                    logs.reset(token)
                if ts is None:
                    ts = engine.visible_ts
                else:
                    if on_commit is not None:
                        on_commit(ts)
                    waited = time.perf_counter()
                    flusher = db._flusher
                    follower = db._follower
                    if follower is not None:
                        # Read your writes: answer once this process applied the commit.
                        follower.heard_of(ts)
                        await follower.wait(ts)
                    else:
                        durable = flusher.waiter(ts)
                        if durable is not None:
                            await durable
                    observer.commit_waited(time.perf_counter() - waited)
                    if ctx._scheduler is not None and ctx._scheduler.scheduled:
                        db._wake_scheduler()
                    deleted = getattr(ctx._storage, "deleted", None)
                    if deleted and db._files is not None:
                        db._files.collect(deleted)  # durable now: drop unreferenced bytes
                outcome = MutationOutcome(value, collector.finish(), ts, attempt, usage=usage)
                break
            if outcome is None:
                message = (
                    f"mutation {fn.path} gave up after {self.max_attempts} attempts because of "
                    f"write conflicts: {last}"
                )
                if isinstance(last, WriteConflict):
                    raise WriteConflict(message, last.table, last.key, last.ts) from last
                raise WriteConflict(message) from last
        except BaseException as exc:
            self._report(fn, identity, started, t0, exc, getattr(exc, "log_lines", ()), None)
            raise
        self._report(fn, identity, started, t0, None, outcome.log_lines, outcome.usage)
        return outcome

    async def _catch_up_after(self, refused: RetryableError) -> None:
        """On a follower, wait (a bounded time) for what a refused transaction missed.

        For a conflict, the commit it conflicted with (``WriteConflict.ts``, perhaps not
        durable yet); otherwise, what the log holds now. Errors are left to the next
        attempt.
        """
        follower = self._db._follower
        if follower is None:
            return
        ts = refused.ts if isinstance(refused, WriteConflict) else 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CATCH_UP_WAIT_S):
                if ts > 0:
                    await follower.wait(ts)
                else:
                    await follower.read_barrier()

    def _action_ctx(
        self, identity: dict[str, Any] | None, collector: logs.LogCollector
    ) -> ActionCtx:
        """A fresh action context; what its ``run_*`` calls print joins ``collector``."""

        async def nested(kind: str, function: Any, _: str, nested_args: Any) -> Any:
            target = self.resolve(function, kind, internal_ok=True)  # type: ignore[arg-type]
            if kind == "query":
                q = await self.run_query(target, nested_args, identity)
                collector.lines.extend(q.log_lines)
                if q.error is not None:
                    raise q.error
                return q.value
            try:
                if kind == "mutation":
                    m = await self._on_loop(self.run_mutation(target, nested_args, identity))
                    collector.lines.extend(m.log_lines)
                    return m.value
                a = await self.run_action(target, nested_args, identity)
            except Exception as exc:
                collector.lines.extend(getattr(exc, "log_lines", ()))
                raise
            collector.lines.extend(a.log_lines)
            return a.value

        engine = self._db._engine
        env = Env(lambda: engine.begin(True))
        ctx = ActionCtx(nested, time.time() * 1000.0, random.getrandbits(64), identity, env)
        ctx._db = self._db
        return ctx

    async def _run_action(
        self, fn: Function[Any], args: Any, identity: dict[str, Any] | None = None
    ) -> ActionOutcome:
        """Run an action; ``ctx.run_*`` calls may reach internal functions."""
        checked = _validate_args(fn, args, self._db._id_checker)
        collector = logs.LogCollector()
        ctx = self._action_ctx(identity, collector)
        token = logs.collecting(collector)
        try:
            value = await self._invoke(fn, ctx, checked)
            value = _check_result(fn, value, self._db._id_checker)
        except Exception as exc:
            _attach_log_lines(exc, collector.finish())
            raise
        finally:
            logs.reset(token)
        return ActionOutcome(value, collector.finish())

    async def run_http_action(
        self,
        action: HttpAction,
        route: str,
        request: Any,
        identity: dict[str, Any] | None = None,
        respond: Callable[[Any], Awaitable[None]] | None = None,
    ) -> ActionOutcome:
        """Run an HTTP action: ``action.handler(ctx, request)`` returns a ``Response``.

        It runs as an action (Convex's ``httpAction``): on an action worker thread with
        an :class:`ActionCtx`, within ``action_time_limit_s`` (seconds), its prints in
        the function log, reported with kind ``"httpAction"`` and path ``route``
        (``"POST /hook"``: the metrics' labels). ``respond(response)``, when given, is
        awaited on the same thread within the same limit (it sends the response, so a
        streamed body is produced there). ``request`` must be usable from that thread.

        Returns:
            The outcome; its ``value`` is the handler's ``Response``.

        Raises:
            HttpActionResponseError: the handler returned something that is not a
                Starlette ``Response``.
            FunctionTimeoutError: the run (response included) passed its time limit.
            Exception: whatever the handler or ``respond`` raised (``log_lines``
                attached).
        """
        from starlette.responses import Response

        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        collector = logs.LogCollector()
        ctx = self._action_ctx(identity, collector)
        handler = action.handler

        async def run() -> Any:
            response = handler(ctx, request)
            if inspect.isawaitable(response):
                response = await response
            if not isinstance(response, Response):
                raise HttpActionResponseError(
                    f"HTTP action {route} returned {type(response).__name__}, not a Response "
                    "(return a starlette.responses.Response)"
                )
            if respond is not None:
                await respond(response)
            return response

        started, t0 = time.time(), time.perf_counter()
        error: BaseException | None = None
        token = logs.collecting(collector)
        try:
            if in_worker():
                value = await run()
            else:
                label = f"httpAction {route}"
                value = await self._actions.run(run, self.action_time_limit_s, label)
        except Exception as exc:
            error = exc
            _attach_log_lines(exc, collector.finish())
            raise
        finally:
            logs.reset(token)
            lines = collector.finish()
            self._db._observer.function_ran(
                "httpAction", route, started, time.perf_counter() - t0, error, lines, identity
            )
        return ActionOutcome(value, lines)
