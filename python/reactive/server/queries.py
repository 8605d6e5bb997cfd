"""Live queries shared by every socket of the server.

A query is identified by (canonical path, arguments, identity, journal). However many
sockets watch it, it runs once per snapshot and is registered once with the engine's
subscription index; a commit that touches its read set marks it stale from that commit on
and tells its watchers at once (``query_stale``, as the commit is published), re-runs it
at the newest snapshot, and tells them again when that result is ready (``query_ready``);
they then compute their next transition, most of them right there (the fan-out path in
:mod:`reactive.server.connection`). At most :data:`REFRESH_CONCURRENCY` re-runs are in
flight; the rest wait in order, so a commit that invalidates thousands of queries costs
one loop pass to mark them, not thousands of tasks at once.

Each result carries the range of timestamps where it is valid: from the snapshot it ran at
until the first commit (of the batch) that invalidated it. A transition at snapshot ``T``
uses the result when ``T`` is in that range and otherwise re-runs the query at exactly
``T``, sharing that run with every socket asking for ``T`` — so all the results of one
transition hold at one snapshot, and a commit re-runs each affected query once.

Source: ARCHITECTURE.md "Life of a socket"; the Convex sync protocol (transitions; unchanged
results are not sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from reactive import _core
from reactive.errors import ReactiveError
from reactive.functions import Function
from reactive.server.errors import error_message as client_error
from reactive.sync.messages import dumps
from reactive.sync.session import QueryResult

if TYPE_CHECKING:
    from reactive.db.database import Database

__all__ = ["Delivery", "QueryCache", "SharedQuery", "Watcher", "identity_key"]

_NEVER = 2**64
REFRESH_CONCURRENCY = 64
"""Re-runs of invalidated queries in flight at once (the executor runs fewer at a time)."""
READY_BATCH = 256
"""Watchers told that a re-run finished between two yields to the event loop."""


class Watcher(Protocol):
    """What a socket gives the cache to hear about its queries (hashable)."""

    def query_stale(self, entry: SharedQuery) -> None:
        """``entry``'s latest result no longer holds at the newest snapshot.

        Called as the commit is published, for every watcher at once: keep it cheap (a
        socket gives its stale set's ``add``). It must not acquire or release queries.
        """

    def query_ready(self, entry: SharedQuery, delivery: Delivery | None) -> None:
        """``entry``'s re-run after a commit finished (``delivery``: its shared state)."""


class Delivery:
    """A re-run's new result as it is handed to a batch of watchers (the fan-out path).

    What every socket's transition shares, computed once per batch rather than per
    socket: the snapshot ``ts`` (the newest published one), the ``result`` that holds at
    it (``None`` when it does not: a later commit already made it stale, and sockets take
    their general path), the transition's ``serverTs`` (ns), the monotonic time of the
    send (s), and two memos that let sockets in the same state share one frame:
    ``texts`` (a transition's key → its text and end version, see
    :meth:`SyncSession.transition_now`) and ``frames`` (a text → its WebSocket frame).
    ``direct`` counts the sockets that wrote their transition here.
    """

    __slots__ = ("direct", "frames", "now_s", "result", "server_ts_ns", "texts", "ts")

    def __init__(self, ts: int, result: QueryResult | None) -> None:
        self.ts = ts
        self.result = result
        self.server_ts_ns = time.time_ns()
        self.now_s = time.monotonic()
        self.texts: dict[Any, tuple[str, str]] = {}
        self.frames: dict[str, bytes] = {}
        self.direct = 0


def identity_key(identity: dict[str, Any] | None) -> str:
    """A canonical string for an identity (part of a shared query's key)."""
    return "" if identity is None else dumps(dict(sorted(identity.items())))


def _fingerprint(*parts: str | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(b"\x00" if part is None else b"\x01" + part.encode())
        h.update(b"\xff")
    return h.digest()


@dataclass
class _Version:
    """One computed result and the timestamps where it holds: ``[valid_ts, stale_ts)``."""

    result: QueryResult
    valid_ts: int
    stale_ts: int = _NEVER


class SharedQuery:
    """One live query, shared by the sockets that watch it."""

    def __init__(
        self,
        cache: QueryCache,
        key: tuple[str, bytes, str, str | None],
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None,
        journal: str | None,
    ) -> None:
        self._cache = cache
        self.key = key
        self.fn = fn
        self.args = args
        self.identity = identity
        self.journal = journal
        self.latest: _Version | None = None
        self.subscription: int | None = None
        self.watchers: dict[Watcher, int] = {}
        self.refs = 0
        self.runs = 0
        self._running: dict[int, asyncio.Future[QueryResult]] = {}

    def _invalidate(self, ts: int = 0) -> None:
        """A published batch starting at ``ts`` touched what the latest result read.

        Watchers hear at once that their result is stale; the query re-runs once, soon,
        at the newest published snapshot, and its watchers are told when that result is
        ready: each socket then finds it in place and sends its transition.
        """
        latest = self.latest
        if latest is not None and latest.stale_ts == _NEVER:
            latest.stale_ts = max(ts, latest.valid_ts + 1)
        if not self.watchers:
            return
        for watcher in tuple(self.watchers):
            watcher.query_stale(self)
        self._cache._schedule_refresh(self)

    async def _rerun(self) -> None:
        try:
            await self.result_at(self._cache.db.published_timestamp)
        except Exception:
            pass  # the watchers' own runs report it
        except BaseException:
            for watcher in list(self.watchers):
                watcher.query_ready(self, None)
            raise
        # Most watchers write their transition right here (the fan-out path): let other
        # work of the event loop in between batches of them (a commit published in
        # between moves the snapshot: each batch has its own delivery).
        watchers = list(self.watchers)
        cache = self._cache
        for start in range(0, len(watchers), READY_BATCH):
            if start:
                await asyncio.sleep(0)
            delivery = self._delivery()
            for watcher in watchers[start : start + READY_BATCH]:
                watcher.query_ready(self, delivery)
            cache.direct_transitions += delivery.direct

    def _delivery(self) -> Delivery:
        """The shared state of a batch of ``query_ready`` calls, at the newest snapshot."""
        ts = self._cache.db.published_timestamp
        return Delivery(ts, self.cached_at(ts))

    def cached_at(self, ts: int) -> QueryResult | None:
        """The result at snapshot ``ts`` if one is held (no run needed), else ``None``."""
        latest = self.latest
        if latest is not None and latest.valid_ts <= ts < latest.stale_ts:
            return latest.result
        return None

    async def result_at(self, ts: int) -> QueryResult:
        """The result at snapshot ``ts`` (running the query if no held result covers it)."""
        latest = self.latest
        if latest is not None and latest.valid_ts <= ts < latest.stale_ts:
            return latest.result
        running = self._running.get(ts)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[QueryResult] = asyncio.get_running_loop().create_future()
        self._running[ts] = fut
        try:
            result = await self._run(ts)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._running[ts]

    async def _run(self, ts: int) -> QueryResult:
        db = self._cache.db
        outcome = await db._runner.run_query(self.fn, self.args, self.identity, ts, self.journal)
        self.runs += 1
        self._cache.runs += 1
        logs = tuple(outcome.log_lines)
        if outcome.error is None:
            try:
                value_json = _core.convex_json(outcome.value, result=True)
            except ReactiveError as exc:
                outcome.error = exc
        if outcome.error is None:
            journal = outcome.journal
            result = QueryResult(
                _fingerprint(value_json, dumps(list(logs)), journal),
                value_json=value_json,
                log_lines=logs,
                journal=journal,
            )
        else:
            message, data = client_error(outcome.error, dev=self._cache.dev)
            # The request id differs per run: leave it out of the fingerprint.
            stable = message.split("\n", 1)[-1]
            result = QueryResult(
                _fingerprint(None, stable, data, dumps(list(logs))),
                error_message=message,
                error_data_json=data,
                log_lines=logs,
                journal=outcome.journal,
            )
        if self.journal is None and outcome.journal is not None:
            # A paginated query's first run fixed where its page ends (spec §17): every
            # later run covers exactly that range, whoever re-runs it.
            self.journal = outcome.journal
            self._cache._rekey(self)
        latest = self.latest
        if latest is None or ts >= latest.valid_ts:
            engine = db._engine
            if self.subscription is None:
                self.subscription, missed = engine.subscribe(outcome.txn)
                db._subscriptions[self.subscription] = self  # type: ignore[assignment]
            else:
                missed = engine.resubscribe(self.subscription, outcome.txn)
            self.latest = _Version(result, ts, ts + 1 if missed else _NEVER)
            if missed:
                # A commit published between this run's snapshot and its subscription
                # touched what it read: no publish will report it, so re-run now (as a
                # commit would), else the watchers keep this result until the next commit.
                asyncio.get_running_loop().call_soon(self._invalidate, ts + 1)
        return result

    def close(self) -> None:
        """Stop watching (no socket uses it any more)."""
        self._cache._refresh_pending.pop(self, None)
        db = self._cache.db
        if self.subscription is not None:
            db._subscriptions.pop(self.subscription, None)
            if not db._closed:
                db._engine.unsubscribe(self.subscription)
            self.subscription = None


class QueryCache:
    """The shared queries of one server, with reference counts per watcher."""

    def __init__(self, db: Database, dev: bool = False) -> None:
        self.db = db
        self.dev = dev
        self._entries: dict[tuple[str, bytes, str, str | None], SharedQuery] = {}
        self.runs = 0
        # Invalidated queries waiting for their re-run (insertion-ordered set).
        self._refresh_pending: dict[SharedQuery, None] = {}
        self._refresh_tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._closed = False
        # Transitions sockets wrote at once as a re-run finished (the fan-out path), and
        # those their own task computed because something else was under way.
        self.direct_transitions = 0
        self.queued_transitions = 0
        db.metrics.gauge(
            "reactive_sync_transitions_direct",
            "Transitions written straight from a query re-run (the fan-out path), in all.",
            lambda: self.direct_transitions,
        )
        db.metrics.gauge(
            "reactive_sync_transitions_queued",
            "Query changes a socket's task handled (something else was under way), in all.",
            lambda: self.queued_transitions,
        )

    def _schedule_refresh(self, entry: SharedQuery) -> None:
        self._refresh_pending[entry] = None
        self._start_refreshes()

    def _start_refreshes(self) -> None:
        """Start pending re-runs while fewer than REFRESH_CONCURRENCY are in flight.

        Called as a batch is published: the tasks are queued ahead of the committing
        callers' wake-ups, so a watcher hears of a commit as soon as its writer does.
        """
        if self._closed:
            return
        pending = self._refresh_pending
        loop = asyncio.get_running_loop()
        while pending and self._in_flight < REFRESH_CONCURRENCY:
            entry = next(iter(pending))
            del pending[entry]
            self._in_flight += 1
            task = loop.create_task(self._refresh_one(entry), name="reactive-query-refresh")
            self._refresh_tasks.add(task)
            task.add_done_callback(self._refresh_tasks.discard)

    async def _refresh_one(self, entry: SharedQuery) -> None:
        try:
            await entry._rerun()
        finally:
            self._in_flight -= 1
            self._start_refreshes()

    def close(self) -> None:
        """Stop re-running queries (the server is closing)."""
        self._closed = True
        self._refresh_pending.clear()
        for task in list(self._refresh_tasks):
            task.cancel()

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None,
        journal: str | None,
        watcher: Watcher,
    ) -> SharedQuery:
        """The shared query for these inputs, with ``watcher`` told of its changes."""
        key = (fn.path or "", _core.value_fingerprint(args), identity_key(identity), journal)
        entry = self._entries.get(key)
        if entry is None:
            entry = SharedQuery(self, key, fn, args, identity, journal)
            self._entries[key] = entry
        entry.refs += 1
        entry.watchers[watcher] = entry.watchers.get(watcher, 0) + 1
        return entry

    def _rekey(self, entry: SharedQuery) -> None:
        """File ``entry`` under its journal, which its first run just produced."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        entry.key = (*entry.key[:3], entry.journal)
        self._entries.setdefault(entry.key, entry)

    def release(self, entry: SharedQuery, watcher: Watcher) -> None:
        """Drop one watcher's reference; the query stops when none is left."""
        uses = entry.watchers.get(watcher, 0) - 1
        if uses > 0:
            entry.watchers[watcher] = uses
        else:
            entry.watchers.pop(watcher, None)
        entry.refs -= 1
        if entry.refs > 0:
            return
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        entry.close()
