"""Group commit: queued commits are written to persistence a batch at a time.

Two implementations: :class:`WorkerFlusher` for backends whose writer runs in the core
(SQLite: a Rust thread writes and publishes batches without the GIL), and :class:`Flusher`,
an asyncio task, for backends written in Python (asyncio drivers).


Commits queue in the engine as they are validated (``Engine.commit``); this task takes
everything queued as one batch, writes it in one backend transaction, then publishes it
(the engine makes it visible and names the subscriptions it invalidates) and wakes the
callers waiting for those commits. While a batch is being written, new commits pile up
and form the next batch, so under load many commits share one durable write.

Invariants: batches are written and published one at a time, in order; a write is never
cancelled half way (``asyncio.shield``); a batch that fails to persist is aborted in the
engine (never visible) and its waiters get ``PersistenceError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from reactive import _core
from reactive.errors import (
    CommitOutcomeUnknownError,
    DatabaseClosedError,
    PersistenceError,
    ReactiveError,
)
from reactive.persistence.base import Persistence

log = logging.getLogger("reactive.db")

_PIPE_READ = 65536
"""Bytes read from the group-commit worker's pipe at a time."""

__all__ = ["Flusher", "WorkerFlusher"]


class Flusher:
    """The group-commit loop of one database."""

    def __init__(
        self,
        engine: _core.Engine,
        persistence: Persistence,
        on_publish: Callable[[list[int], int, int], None],
    ) -> None:
        self._engine = engine
        self._persistence = persistence
        self._on_publish = on_publish
        # Told the size of each durable batch (metrics).
        self.on_batch: Callable[[int], None] | None = None
        self._event = asyncio.Event()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._stopping = False
        # Set when a commit's outcome became unknown: nothing more is committed.
        self._broken: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        # Resolved once the batch being written now is published (or failed).
        self._in_flight: asyncio.Future[None] | None = None
        self.batches_written = 0
        self.commits_written = 0

    async def in_flight_published(self) -> None:
        """Wait until the batch being written now, if any, is published or has failed.

        What a cluster's leader waits for before a read: only that batch can be durable
        (and so served by a follower) without being visible here; commits still queued
        are not durable anywhere.
        """
        fut = self._in_flight
        if fut is not None:
            await asyncio.shield(fut)

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reactive-flusher")

    def stopped_error(self) -> CommitOutcomeUnknownError | None:
        """The error for every commit once commits stopped, else ``None``.

        Commits stop when an earlier commit's outcome became unknown, until the database
        is reopened.
        """
        if self._broken is None:
            return None
        stopped = CommitOutcomeUnknownError(
            "the database stopped committing: an earlier commit's outcome is unknown "
            f"({self._broken}); reopen it"
        )
        stopped.__cause__ = self._broken
        return stopped

    def nudge(self) -> None:
        """Tell the loop something is queued."""
        self._event.set()

    async def wait(self, ts: int) -> None:
        """Wait until commit ``ts`` is durable and visible.

        Raises:
            PersistenceError: its batch failed to persist (the commit did not happen).
        """
        fut = self.waiter(ts)
        if fut is not None:
            # A cancelled caller cancels only its own future; the flusher skips settled ones.
            await fut

    def waiter(self, ts: int) -> asyncio.Future[None] | None:
        """What :meth:`wait` awaits: the future of commit ``ts``, or ``None`` if visible.

        (The runner awaits it directly: one coroutine less per commit.)

        Raises:
            DatabaseClosedError: the database is closed.
        """
        if self._engine.visible_ts >= ts:
            return None
        if self._stopping and self._task is None:
            raise DatabaseClosedError("the database is closed")
        fut = self._waiters.get(ts)
        if fut is None or fut.cancelled():
            fut = asyncio.get_running_loop().create_future()
            self._waiters[ts] = fut
        self._event.set()
        return fut

    async def flush(self) -> None:
        """Wait until everything queued now (commits and catalog changes) is persisted.

        Raises:
            PersistenceError: a batch failed to persist.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        self._event.set()
        await fut

    async def stop(self) -> None:
        """Persist what is queued, then end the loop."""
        self._stopping = True
        self._event.set()
        if self._task is not None:
            await self._task
            self._task = None

    def _settle_flush(self, error: BaseException | None) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        for fut in waiters:
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    def _fail(self, batch: _core.PersistBatch, error: BaseException) -> BaseException:
        self._engine.abort(batch)
        for ts in batch.timestamps:
            fut = self._waiters.pop(ts, None)
            if fut is not None and not fut.done():
                fut.set_exception(error)
        return error

    async def _write(self, batch: _core.PersistBatch) -> BaseException | None:
        done = asyncio.get_running_loop().create_future()
        self._in_flight = done
        try:
            return await self._write_batch(batch)
        finally:
            self._in_flight = None
            done.set_result(None)

    async def _write_batch(self, batch: _core.PersistBatch) -> BaseException | None:
        stopped = self.stopped_error()
        if stopped is not None:
            return self._fail(batch, stopped)
        try:
            await asyncio.shield(self._persistence.write_batch(batch))
        except CommitOutcomeUnknownError as exc:
            self._broken = exc
            return self._fail(batch, exc)
        except ReactiveError as exc:
            # The backend's contract: a PersistenceError (other than the unknown outcome
            # above) means nothing of the batch was written.
            error = PersistenceError(f"the commit could not be made durable: {exc}")
            error.__cause__ = exc
            return self._fail(batch, error)
        except Exception as exc:
            # Not a failure the backend vouches for: whether the batch was written is
            # unknown, so stop committing rather than risk reporting a written commit lost.
            log.error("persistence failed with an unexpected error; commits stop", exc_info=exc)
            unknown = CommitOutcomeUnknownError(
                f"the commit's outcome is unknown after an unexpected error: {exc!r}"
            )
            unknown.__cause__ = exc
            self._broken = unknown
            return self._fail(batch, unknown)
        invalidated = self._engine.publish(batch)
        self.batches_written += 1
        self.commits_written += len(batch)
        if self.on_batch is not None and len(batch):
            self.on_batch(len(batch))
        stamps = batch.timestamps
        if stamps:
            # Before waking anyone: what they read next must reflect this batch.
            self._on_publish(invalidated, stamps[0], stamps[-1])
        for ts in stamps:
            fut = self._waiters.pop(ts, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        return None

    async def _run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            error: BaseException | None = None
            while True:
                batch = self._engine.take_batch()
                if batch is None:
                    break
                failed = await self._write(batch)
                error = error or failed
                if failed is not None:
                    break
            self._settle_flush(error)
            # Waiters for timestamps published by an earlier batch (visible already).
            visible = self._engine.visible_ts
            for ts in [t for t in self._waiters if t <= visible]:
                fut = self._waiters.pop(ts)
                if not fut.done():
                    fut.set_result(None)
            if self._stopping and (error is not None or not self._engine.has_pending()):
                break
            if error is not None:
                # Back off before retrying what stays queued (catalog changes, index drops).
                await asyncio.sleep(0.05)
                if self._engine.has_pending():
                    self._event.set()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(DatabaseClosedError("the database closed before the commit"))
        self._waiters.clear()
        self._settle_flush(DatabaseClosedError("the database is closed"))


class WorkerFlusher:
    """Group commit by the core's worker thread (backends that offer one: SQLite).

    The Rust worker waits for queued commits, writes each batch and publishes it without the
    GIL, so writing overlaps the running of the next transactions; it announces completed
    batches on a pipe that the event loop watches (``add_reader``). This class resolves the
    waiters of those batches and dispatches their invalidated subscriptions.
    """

    def __init__(
        self,
        engine: _core.Engine,
        worker: _core.GroupCommitWorker,
        on_publish: Callable[[list[int], int, int], None],
    ) -> None:
        self._engine = engine
        self._worker = worker
        self._on_publish = on_publish
        # Told the size of each durable batch (metrics).
        self.on_batch: Callable[[int], None] | None = None
        self._fd = worker.fileno()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._covered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.commits_written = 0

    @property
    def batches_written(self) -> int:
        """Batches written so far."""
        return int(self._worker.batches_written)

    def start(self) -> None:
        """Watch the worker's pipe on the running event loop."""
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._drain)

    def stopped_error(self) -> None:
        """Always ``None``: every outcome is known (see :meth:`Flusher.stopped_error`).

        A failed SQLite transaction is rolled back by the core's writer.
        """
        return None

    def nudge(self) -> None:
        """Nothing to do: the engine wakes the worker itself when something is queued."""

    def _drain(self) -> None:
        # Empty the pipe: one read normally does it (a byte per completion); reading on
        # only while reads come back full spares the EAGAIN exception per batch.
        try:
            while len(os.read(self._fd, _PIPE_READ)) == _PIPE_READ:
                pass
        except BlockingIOError:
            pass
        for generation, timestamps, invalidated, error in self._worker.take_completions():
            failure: BaseException | None = None
            if error is not None:
                failure = PersistenceError(f"the commit could not be made durable: {error}")
            elif timestamps:
                # Before waking anyone: what they read next must reflect this batch.
                self._on_publish(invalidated, timestamps[0], timestamps[-1])
            for ts in timestamps:
                fut = self._waiters.pop(ts, None)
                if fut is None or fut.done():
                    continue
                if failure is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(failure)
            if failure is None:
                self.commits_written += len(timestamps)
                if self.on_batch is not None and timestamps:
                    self.on_batch(len(timestamps))
            self._covered = max(self._covered, generation)
            if not self._flush_waiters:
                continue
            keep: list[tuple[int, asyncio.Future[None]]] = []
            for wanted, fut in self._flush_waiters:
                if fut.done():
                    continue
                if failure is not None:
                    fut.set_exception(failure)
                elif wanted <= self._covered:
                    fut.set_result(None)
                else:
                    keep.append((wanted, fut))
            self._flush_waiters = keep

    async def wait(self, ts: int) -> None:
        """Wait until commit ``ts`` is durable and visible.

        Raises:
            PersistenceError: its batch failed to persist (the commit did not happen).
        """
        fut = self.waiter(ts)
        if fut is not None:
            await fut

    def waiter(self, ts: int) -> asyncio.Future[None] | None:
        """What :meth:`wait` awaits: the future of commit ``ts``, or ``None`` if visible.

        Raises:
            DatabaseClosedError: the database is closed.
        """
        engine = self._engine
        if engine.visible_ts >= ts:
            return None
        if self._stopped:
            raise DatabaseClosedError("the database is closed")
        fut = self._waiters.get(ts)
        if fut is None or fut.cancelled():
            fut = asyncio.get_running_loop().create_future()
            self._waiters[ts] = fut
        if engine.visible_ts >= ts:  # published between the check and the future
            self._waiters.pop(ts, None)
            return None
        return fut

    async def flush(self) -> None:
        """Wait until everything queued now (commits and catalog changes) is persisted.

        Raises:
            PersistenceError: a batch failed to persist.
        """
        wanted = self._engine.queue_generation
        self._drain()
        if wanted <= self._covered:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((wanted, fut))
        await fut

    async def stop(self) -> None:
        """Persist what is queued, stop the worker, settle every waiter."""
        if self._stopped:
            return
        await asyncio.to_thread(self._worker.stop)
        self._drain()
        self._stopped = True
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        closed = DatabaseClosedError("the database closed before the commit")
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(closed)
        self._waiters.clear()
        for _, fut in self._flush_waiters:
            if not fut.done():
                fut.set_exception(DatabaseClosedError("the database is closed"))
        self._flush_waiters.clear()
