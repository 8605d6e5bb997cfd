"""Live queries: ``async for value in db.subscribe(path, args)``.

The first iteration runs the query and registers its read set with the engine's
subscription index. A commit whose written keys fall in that read set marks the
subscription invalidated (``Engine.publish``); the next iteration re-runs the query at the
newest snapshot, re-registers the new read set and yields the result if it differs from the
last one yielded (compared by exact value: int 1 and float 1.0 differ). A commit that
touches nothing the query read never re-runs it.

Source: ARCHITECTURE.md "Life of a subscription"; Convex's subscription worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.errors import DatabaseClosedError

if TYPE_CHECKING:
    from reactive.db.database import Database
    from reactive.functions import Function

__all__ = ["Subscription"]


class Subscription:
    """An async iterator over a query's results: the first, then each changed one.

    Attributes:
        runs: How many times the query ran (the first run included).
    """

    def __init__(self, db: Database, fn: Function[Any], args: dict[str, Any] | None) -> None:
        self._db = db
        self._fn = fn
        self._args = args
        self._id: int | None = None
        self._invalidated = asyncio.Event()
        self._closed = False
        self._fingerprint: bytes | None = None
        self._yielded = False
        self.runs = 0

    def _invalidate(self, ts: int = 0) -> None:
        self._invalidated.set()

    async def _run(self) -> tuple[Any, BaseException | None]:
        outcome = await self._db._runner.run_query(self._fn, self._args)
        self.runs += 1
        engine = self._db._engine
        if self._id is None:
            self._id, missed = engine.subscribe(outcome.txn)
            self._db._subscriptions[self._id] = self
        else:
            missed = engine.resubscribe(self._id, outcome.txn)
        if missed:
            self._invalidated.set()
        return outcome.value, outcome.error

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        if self._closed or self._db._closed:
            raise StopAsyncIteration
        if not self._yielded:
            value, error = await self._run()
            self._yielded = True
            if error is not None:
                raise error
            self._fingerprint = _core.value_fingerprint(value)
            return value
        while True:
            await self._invalidated.wait()
            if self._closed or self._db._closed:
                raise StopAsyncIteration
            self._invalidated.clear()
            value, error = await self._run()
            if error is not None:
                self._fingerprint = None
                raise error
            fingerprint = _core.value_fingerprint(value)
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                return value

    async def get(self, timeout_s: float | None = None) -> Any:
        """The next result (``await sub.get()``), waiting at most ``timeout_s`` seconds.

        Raises:
            TimeoutError: no new result in time.
            DatabaseClosedError: the subscription or the database was closed.
        """
        try:
            return await asyncio.wait_for(self.__anext__(), timeout_s)
        except StopAsyncIteration:
            raise DatabaseClosedError("the subscription is closed") from None

    def close(self) -> None:
        """Stop watching; iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._invalidated.set()
        if self._id is not None:
            self._db._subscriptions.pop(self._id, None)
            if not self._db._closed:
                self._db._engine.unsubscribe(self._id)

    async def aclose(self) -> None:
        """Stop watching (async form of :meth:`close`)."""
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and self._id is not None:
            # The interpreter may be shutting down: nothing to report to.
            with contextlib.suppress(Exception):
                self._db._engine.unsubscribe(self._id)
