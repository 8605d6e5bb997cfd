"""Group commit: one task writes queued commits to persistence, a batch at a time.

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
from collections.abc import Callable

from reactive import _core
from reactive.errors import DatabaseClosedError, PersistenceError, ReactiveError
from reactive.persistence.base import Persistence

__all__ = ["Flusher"]


class Flusher:
    """The group-commit loop of one database."""

    def __init__(
        self,
        engine: _core.Engine,
        persistence: Persistence,
        on_publish: Callable[[list[int]], None],
    ) -> None:
        self._engine = engine
        self._persistence = persistence
        self._on_publish = on_publish
        self._event = asyncio.Event()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.batches_written = 0
        self.commits_written = 0

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reactive-flusher")

    def nudge(self) -> None:
        """Tell the loop something is queued."""
        self._event.set()

    async def wait(self, ts: int) -> None:
        """Wait until commit ``ts`` is durable and visible.

        Raises:
            PersistenceError: its batch failed to persist (the commit did not happen).
        """
        if self._engine.visible_ts >= ts:
            return
        if self._stopping and self._task is None:
            raise DatabaseClosedError("the database is closed")
        fut = self._waiters.get(ts)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[ts] = fut
        self._event.set()
        await asyncio.shield(fut)

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

    async def _write(self, batch: _core.PersistBatch) -> BaseException | None:
        try:
            await asyncio.shield(self._persistence.write_batch(batch))
        except (ReactiveError, OSError) as exc:
            self._engine.abort(batch)
            error = PersistenceError(f"the commit could not be made durable: {exc}")
            error.__cause__ = exc
            for ts in batch.timestamps:
                fut = self._waiters.pop(ts, None)
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return error
        invalidated = self._engine.publish(batch)
        self.batches_written += 1
        self.commits_written += len(batch)
        for ts in batch.timestamps:
            fut = self._waiters.pop(ts, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        if invalidated:
            self._on_publish(invalidated)
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
