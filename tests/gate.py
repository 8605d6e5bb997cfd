"""A gate for tests that pause function handlers: set from any thread, awaited on any loop.

Handlers run on worker threads, each with its own event loop, so an ``asyncio.Event``
made on the test's loop cannot be awaited inside them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Gate", "on_loop"]

T = TypeVar("T")


class Gate:
    """An event that any thread may set and any event loop may wait for."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Open the gate."""
        self._event.set()

    def is_set(self) -> bool:
        """True once opened."""
        return self._event.is_set()

    async def wait(self) -> bool:
        """Wait until the gate opens (polling every millisecond, without blocking the loop)."""
        while not self._event.is_set():
            await asyncio.sleep(0.001)
        return True


def on_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """``fn`` made callable from a handler's thread: its coroutine runs on ``loop``.

    A handler that must call back into the database's own loop (``db.mutation`` from a
    test hook) awaits it this way.
    """

    async def call() -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_run(fn), loop))

    return call


async def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
