"""Following a writer's log: a read replica of a PostgreSQL or MySQL database.

A database opened with ``reactive.open(url, follow=True)`` does not take the writer lease.
Another process (the writer: a ``reactive.open`` or a server on the same database) commits;
this one loads the database, then tails its log into its own engine and serves queries,
subscriptions and point-in-time reads from it, as the writer does from its own.

:class:`LogFollower` stands where the group-commit loop stands in a writer
(:mod:`reactive.db.flusher`): a task reads the log past the last commit it applied, in
slices of whole commits read in one snapshot (``LogSource.read_log_since``), has the engine
verify and publish each one (``Engine.apply_log``: checksums, torn commits, each revision
continuing the one held; index changes and written keys derived as the writer's committer
derived them), then tells the database which subscriptions the slice invalidated. Between
slices it waits for the writer to commit (``LogSource.wait_log``: PostgreSQL's
LISTEN/NOTIFY, polling on MySQL), and reads at least every ``poll_s`` seconds anyway.

Invariants: slices are applied one at a time in timestamp order, so a reader at the visible
timestamp sees a prefix of the writer's log made of whole commits, and snapshots only move
forward; nothing is written to the database from here.

When the log no longer continues what was applied (the writer's retention pruned history
this process never read, after a long disconnection; or a revision that does not follow
the one held), following stops: :meth:`LogFollower.stopped_error` says why, waiters fail
with it, and the database must be reopened (queries keep answering from what was applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from reactive import _core
from reactive.errors import (
    CorruptionError,
    DatabaseClosedError,
    LogGapError,
    PersistenceError,
    ReactiveError,
)
from reactive.persistence.base import LogSource

log = logging.getLogger("reactive.db")

__all__ = ["LogFollower"]

DEFAULT_POLL_S = 1.0
"""Longest wait between two reads of the log when no wake-up arrives (seconds)."""

_RETRY_MAX_S = 2.0
"""Longest pause before reading again after the database failed (seconds)."""


class LogFollower:
    """Tails the log a writer commits into this process's engine.

    Args:
        engine: This process's engine, loaded from the same database.
        source: The database opened without the lease (``open_persistence(url,
            lease=False)``).
        on_publish: Told ``(invalidated subscription ids, first ts, last ts)`` after each
            applied slice, in commit order (``Database._invalidate``).
        catalog_json: The catalog the engine was loaded with (a slice's catalog is
            installed only when it differs).
        poll_s: Longest wait between reads when no wake-up arrives (seconds).
    """

    def __init__(
        self,
        engine: _core.Engine,
        source: LogSource,
        on_publish: Callable[[list[int], int, int], None],
        *,
        catalog_json: str | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self._engine = engine
        # Every write to the engine is refused while it follows (it would never persist).
        engine.set_following(True)
        self._source = source
        self.on_publish = on_publish
        self._catalog_json = catalog_json
        self.poll_s = poll_s
        # Told the number of commits of each applied slice (metrics).
        self.on_batch: Callable[[int], None] | None = None
        # Told why, once, if following stops for good (a gap in the log: retention pruned
        # past this process; a corrupt record): the process must load the database anew.
        self.on_stopped: Callable[[BaseException], None] | None = None
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._broken: BaseException | None = None
        self._caught_up = asyncio.Event()
        # Read barriers (read_barrier): the batch waiting for the next read of the head,
        # and the task reading it (one read in flight serves every caller before it).
        self._barrier_next: asyncio.Future[int] | None = None
        self._barrier_task: asyncio.Task[None] | None = None
        self.barrier_reads = 0
        # The newest commit timestamp the database reported (the writer's head).
        self.head_ts = int(engine.visible_ts)
        # When this process first heard of a commit it has not applied (monotonic seconds;
        # None while it has applied everything it heard of): the start of its lag.
        self._behind_since: float | None = None
        # The newest commit published here (its subscriptions told): what waiters wait for.
        # The engine's visible_ts moves first, inside apply_log's thread.
        self.published_ts = int(engine.visible_ts)
        self.slices_applied = 0
        self.commits_applied = 0
        self.batches_written = 0
        self.commits_written = 0
        self.last_applied_at = time.monotonic()

    # -- the interface of reactive.db.flusher -------------------------------------------

    def start(self) -> None:
        """Start following on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reactive-follower")

    def stopped_error(self) -> PersistenceError | None:
        """Why following stopped (the database must be reopened), else ``None``."""
        if self._broken is None:
            return None
        stopped = PersistenceError(
            f"this process stopped following the database's log ({self._broken}); reopen it"
        )
        stopped.__cause__ = self._broken
        return stopped

    def nudge(self) -> None:
        """Nothing to do: a follower queues no commits."""

    async def wait(self, ts: int) -> None:
        """Wait until commit ``ts`` of the log is applied here.

        Raises:
            PersistenceError: following stopped before it was applied.
            DatabaseClosedError: the database closed first.
        """
        fut = self.waiter(ts)
        if fut is not None:
            # Shared by every waiter of ts: a cancelled caller must not cancel the others.
            await asyncio.shield(fut)

    def waiter(self, ts: int) -> asyncio.Future[None] | None:
        """What :meth:`wait` awaits: ``None`` if ``ts`` is applied here already.

        Else a future resolved once it is.

        Raises:
            DatabaseClosedError: the database is closed.
            PersistenceError: following stopped.
        """
        if self.published_ts >= ts:
            return None
        if self._stopping:
            raise DatabaseClosedError("the database is closed")
        stopped = self.stopped_error()
        if stopped is not None:
            raise stopped
        fut = self._waiters.get(ts)
        if fut is None or fut.cancelled():
            fut = asyncio.get_running_loop().create_future()
            self._waiters[ts] = fut
        return fut

    def heard_of(self, ts: int) -> None:
        """Commit ``ts`` is durable (the writer answered with it): read the log now.

        Rather than at the next notification or poll.
        """
        if ts > self.published_ts:
            self._heard(ts)
            self._source.heard_of(ts)

    async def flush(self) -> None:
        """Wait until what the database held when called is applied here.

        Raises:
            PersistenceError: following stopped, or the database cannot be read.
        """
        head = await self._source.read_log_since(int(self._engine.visible_ts), max_commits=1)
        target = max(head.max_ts, head.last_ts)
        await self.wait(target)

    async def read_barrier(self) -> int:
        """Wait until every commit the database held when called is applied here.

        Reads the database's newest commit timestamp (the ``max_ts`` global, one query)
        and waits until this process has applied it: a read begun afterwards sees every
        commit acknowledged, by any process, before this call (linearizable reads on a
        follower, as a quorum read's "read index" gives them; Ongaro, "Consensus: Bridging
        Theory and Practice", 2014, §6.4). Callers arriving while a read is in flight share
        the next one: at most two reads are in flight or pending, whatever the callers.

        Returns the timestamp waited for (u64 ns).

        Raises:
            PersistenceError: the database cannot be read (or following stopped).
            DatabaseClosedError: the database closed first.
        """
        fut = self._barrier_next
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._barrier_next = fut
            if self._barrier_task is None:
                self._barrier_task = asyncio.get_running_loop().create_task(
                    self._read_heads(), name="reactive-read-barrier"
                )
        head = await asyncio.shield(fut)
        await self.wait(head)
        return head

    async def _read_heads(self) -> None:
        current: asyncio.Future[int] | None = None
        try:
            while (current := self._barrier_next) is not None:
                self._barrier_next = None
                try:
                    raw = await self._source.get_global("max_ts")
                    head = int(raw.decode()) if raw else 0
                except Exception as exc:
                    current.set_exception(exc)
                    current.exception()  # retrieved: its callers re-raise it
                    continue
                self.barrier_reads += 1
                self._heard(head)
                current.set_result(head)
        finally:
            self._barrier_task = None
            pending, self._barrier_next = self._barrier_next, None
            for fut in (current, pending):
                if fut is not None and not fut.done():
                    fut.set_exception(DatabaseClosedError("the database is closed"))
                    fut.exception()

    async def stop_following(self) -> None:
        """Stop the loop (waiters stay); :meth:`start` resumes it, :meth:`catch_up` reads on."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self) -> None:
        """Apply everything the database holds now (the loop stopped: a promotion).

        Raises:
            PersistenceError: the database failed, or the log does not continue what was
                applied (``LogGapError``, ``CorruptionError``).
        """
        while True:
            piece = await self._source.read_log_since(int(self._engine.visible_ts))
            if not await self._apply(piece):
                break
        lost = PersistenceError(
            "the commit is not in the database's log: its writer stopped before making it durable"
        )
        self._settle(lost)

    async def stop(self) -> None:
        """Stop following; every waiter fails with ``DatabaseClosedError``."""
        self._stopping = True
        barriers = self._barrier_task
        if barriers is not None:
            barriers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await barriers
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._settle(DatabaseClosedError("the database closed before the commit was applied"))

    # -- state ---------------------------------------------------------------------------

    @property
    def lag_ts(self) -> int:
        """How long this process has been behind the newest commit it heard of (ns).

        0 when it has applied every commit it heard of; else the time since it first heard
        of one it has not applied yet. (Not the difference of the two commits'
        timestamps: after a quiet minute that would read a minute for a follower one
        commit and a millisecond behind.)
        """
        since = self._behind_since
        if since is None or self.published_ts >= self.head_ts:
            return 0
        return int((time.monotonic() - since) * 1e9)

    def _heard(self, ts: int) -> None:
        """The log holds commit ``ts`` (a read, a notification, a poll, the writer)."""
        if ts > self.head_ts:
            self.head_ts = ts
        if self._behind_since is None and self.head_ts > self.published_ts:
            self._behind_since = time.monotonic()

    async def caught_up(self) -> None:
        """Wait until one read found nothing more to apply (used at open)."""
        await self._caught_up.wait()

    # -- the loop ------------------------------------------------------------------------

    def _settle(self, error: BaseException | None) -> None:
        visible = self.published_ts
        for ts in list(self._waiters):
            if error is None and ts > visible:
                continue
            fut = self._waiters.pop(ts)
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    async def _apply(self, piece: Any) -> bool:
        """Apply one slice; returns whether the log has more right now."""
        catalog = piece.catalog_json
        install = catalog if catalog is not None and catalog != self._catalog_json else None
        if piece.commits or install is not None:
            applied = await asyncio.to_thread(
                self._engine.apply_log, install, piece.commits, piece.documents
            )
            if install is not None:
                self._catalog_json = install
            if applied["last_ts"] is not None:
                self.slices_applied += 1
                self.commits_applied += int(applied["commits"])
                self.batches_written += 1
                self.commits_written += int(applied["commits"])
                self.last_applied_at = time.monotonic()
                if self.on_batch is not None:
                    self.on_batch(int(applied["commits"]))
                # Before waking anyone: what they read next must reflect this slice.
                self.published_ts = max(self.published_ts, int(applied["last_ts"]))
                self.on_publish(
                    list(applied["invalidated"]), int(applied["first_ts"]), int(applied["last_ts"])
                )
        self._heard(max(int(piece.max_ts), int(piece.last_ts)))
        if self.published_ts >= self.head_ts:
            self._behind_since = None
        self._settle(None)
        return bool(piece.more)

    def _stop_broken(self, exc: BaseException) -> None:
        self._broken = exc
        self._caught_up.set()
        stopped = self.stopped_error()
        self._settle(stopped)
        if self.on_stopped is not None and stopped is not None:
            self.on_stopped(stopped)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                after = int(self._engine.visible_ts)
                piece = await self._source.read_log_since(after)
                more = await self._apply(piece)
                failures = 0
                if more:
                    continue
                self._caught_up.set()
                head = await self._source.wait_log(int(self._engine.visible_ts), self.poll_s)
                # What the database has heard of, before it is read: lag_ts shows the gap.
                self._heard(int(head))
            except asyncio.CancelledError:
                raise
            except (LogGapError, CorruptionError) as exc:
                log.error("following the log stopped: %s; reopen the database", exc)
                self._stop_broken(exc)
                return
            except ReactiveError as exc:
                # The database unreachable for a while: keep trying, with backoff.
                failures += 1
                delay = min(_RETRY_MAX_S, 0.05 * 2**failures)
                log.warning("reading the log failed (%s); again in %.2f s", exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:
                # A bug, not the database: stop following loudly rather than leave every
                # waiter hanging on a task that died.
                log.exception("following the log failed; reopen the database")
                self._stop_broken(exc)
                return
