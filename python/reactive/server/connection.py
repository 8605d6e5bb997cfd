"""One WebSocket: drives a :class:`~reactive.sync.session.SyncSession` with real I/O.

Everything that touches the session goes through one queue, handled by one task, so the
session sees events in order: client frames (from a reader task), finished mutations and
actions (from their own tasks), computed transitions, changes of watched queries and ping
ticks. Effects are carried out in the order the session emits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from reactive import _core
from reactive.errors import ReactiveError, RetryableError
from reactive.functions import Function
from reactive.server.queries import SharedQuery, error_message
from reactive.sync.session import (
    Close,
    ComputeTransition,
    Effect,
    QueryResult,
    QuerySpec,
    RunAction,
    RunMutation,
    Send,
    SyncSession,
)

if TYPE_CHECKING:
    from reactive.server.app import Server

__all__ = ["Connection"]

log = logging.getLogger("reactive.server")


def _spec_error(message: str) -> QueryResult:
    return QueryResult(
        hashlib.blake2b(message.encode(), digest_size=16).digest(), error_message=message
    )


class Connection:
    """The server side of one socket."""

    def __init__(self, server: Server, websocket: WebSocket) -> None:
        self.server = server
        self.ws = websocket
        self.session = SyncSession(authenticate=server.authenticate)
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        # queryId -> (the spec it was acquired for, the shared query or an error result)
        self._queries: dict[int, tuple[QuerySpec, SharedQuery | QueryResult]] = {}
        self._closed = False

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed(self) -> None:
        """A watched query got a new result (called by the query cache)."""
        self._events.put_nowait(("changed", None))

    async def run(self) -> None:
        """Serve the socket until it closes."""
        await self.ws.accept()
        self.session.sent_at(time.monotonic())
        self._spawn(self._read(), "reactive-ws-read")
        try:
            while not self._closed:
                kind, payload = await self._events.get()
                if kind == "closed":
                    break
                effects = self._handle(kind, payload)
                await self._apply(effects)
        finally:
            self._closed = True
            for task in list(self._tasks):
                task.cancel()
            for _, held in self._queries.values():
                if isinstance(held, SharedQuery):
                    self.server.queries.release(held, self._changed)
            self._queries.clear()

    def _handle(self, kind: str, payload: Any) -> list[Effect]:
        s = self.session
        if kind == "frame":
            return s.receive(payload, time.time() * 1000.0)
        if kind == "changed":
            return s.watched_changed()
        if kind == "mutation":
            return s.mutation_finished(**payload)
        if kind == "action":
            return s.action_finished(**payload)
        if kind == "transition":
            ts, results = payload
            return s.transition_computed(ts, results, time.time_ns())
        if kind == "ping":
            return s.ping_due(time.monotonic())
        if kind == "binary":
            return s._fatal("binary frames are not part of the protocol; send JSON text frames")
        return []

    async def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                try:
                    await self.ws.send_text(effect.text)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    self._closed = True
                    return
                self.session.sent_at(time.monotonic())
            elif isinstance(effect, Close):
                with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                    await self.ws.close(effect.code, effect.reason[:123])
                self._closed = True
                return
            elif isinstance(effect, RunMutation):
                self._spawn(self._run_mutation(effect), "reactive-mutation")
            elif isinstance(effect, RunAction):
                self._spawn(self._run_action(effect), "reactive-action")
            elif isinstance(effect, ComputeTransition):
                self._drop_removed(effect)
                ready = self._ready_results(effect)
                if ready is None:
                    self._spawn(self._compute(effect), "reactive-transition")
                else:
                    # Every result is in place: no task, no queue hop (fan-out path).
                    ts, results = ready
                    await self._apply(self.session.transition_computed(ts, results, time.time_ns()))
                    if self._closed:
                        return

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    self._events.put_nowait(("frame", text))
                elif message.get("bytes") is not None:
                    self._events.put_nowait(("binary", None))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self._events.put_nowait(("closed", None))

    def ping_due(self) -> None:
        """The server's ping timer ticked (one timer for all sockets)."""
        if not self._closed:
            self._events.put_nowait(("ping", None))

    # -- functions ---------------------------------------------------------------------------

    def _resolve(self, path: str, kind: str) -> Function:
        return self.server.db._runner.resolve(path, kind, internal_ok=False)  # type: ignore[arg-type]

    async def _run_mutation(self, effect: RunMutation) -> None:
        session_id = self.session.session_id
        request = (session_id, effect.request_id) if session_id else None
        payload: dict[str, Any]
        try:
            fn = self._resolve(effect.udf_path, "mutation")
            args = _core.from_convex_json(effect.args, "args")
            outcome = await self.server.db._runner.run_mutation(fn, args, effect.identity, request)
            payload = {
                "request_id": effect.request_id,
                "ts": outcome.ts,
                "value_json": _core.convex_json(outcome.value),
                "log_lines": outcome.log_lines,
            }
        except Exception as exc:
            message, data = error_message(exc)
            if not isinstance(exc, ReactiveError):
                log.debug("mutation %s failed", effect.udf_path, exc_info=exc)
            payload = {
                "request_id": effect.request_id,
                "error_message": message,
                "error_data_json": data,
                "log_lines": getattr(exc, "log_lines", ()),
            }
        self._events.put_nowait(("mutation", payload))

    async def _run_action(self, effect: RunAction) -> None:
        payload: dict[str, Any]
        try:
            fn = self._resolve(effect.udf_path, "action")
            args = _core.from_convex_json(effect.args, "args")
            outcome = await self.server.db._runner.run_action(fn, args, effect.identity)
            payload = {
                "request_id": effect.request_id,
                "value_json": _core.convex_json(outcome.value),
                "log_lines": outcome.log_lines,
            }
        except Exception as exc:
            message, data = error_message(exc)
            payload = {
                "request_id": effect.request_id,
                "error_message": message,
                "error_data_json": data,
                "log_lines": getattr(exc, "log_lines", ()),
            }
        self._events.put_nowait(("action", payload))

    # -- transitions ---------------------------------------------------------------------------

    def _acquire(self, query_id: int, spec: QuerySpec, identity: Any) -> SharedQuery | QueryResult:
        held = self._queries.get(query_id)
        if held is not None and held[0] == spec:
            return held[1]
        if held is not None and isinstance(held[1], SharedQuery):
            self.server.queries.release(held[1], self._changed)
        try:
            fn = self._resolve(spec.udf_path, "query")
            args = _core.from_convex_json(spec.args, "args")
            entry: SharedQuery | QueryResult = self.server.queries.acquire(
                fn, args, identity, spec.journal, self._changed
            )
        except Exception as exc:
            entry = _spec_error(error_message(exc)[0].split("\n", 1)[-1])
        self._queries[query_id] = (spec, entry)
        return entry

    def _drop_removed(self, effect: ComputeTransition) -> None:
        for query_id in [q for q in self._queries if q not in effect.queries]:
            _, held = self._queries.pop(query_id)
            if isinstance(held, SharedQuery):
                self.server.queries.release(held, self._changed)

    def _ready_results(
        self, effect: ComputeTransition
    ) -> tuple[int, dict[int, QueryResult]] | None:
        """The transition's results if every one is already held, else ``None``."""
        ts = max(self.server.db.published_timestamp, effect.min_ts)
        results: dict[int, QueryResult] = {}
        for query_id, spec in effect.queries.items():
            held = self._acquire(query_id, spec, effect.identity)
            if isinstance(held, SharedQuery):
                result = held.cached_at(ts)
                if result is None:
                    return None
                results[query_id] = result
            else:
                results[query_id] = held
        return ts, results

    async def _compute(self, effect: ComputeTransition) -> None:
        db = self.server.db
        ts = max(db.published_timestamp, effect.min_ts)
        results: dict[int, QueryResult] = {}
        try:
            for query_id, spec in effect.queries.items():
                held = self._acquire(query_id, spec, effect.identity)
                if not isinstance(held, SharedQuery):
                    results[query_id] = held
                    continue
                try:
                    results[query_id] = await held.result_at(ts)
                except RetryableError:
                    raise
                except Exception as exc:
                    # This query cannot run (not a passing state of the engine): it fails,
                    # alone, as QueryFailed; the other queries and the socket go on.
                    log.warning("query %s failed outside its function: %r", spec.udf_path, exc)
                    results[query_id] = _spec_error(error_message(exc)[0].split("\n", 1)[-1])
        except RetryableError as exc:  # e.g. the snapshot left retention: compute again
            log.warning("computing a transition failed, retrying: %s", exc)
            await asyncio.sleep(0.05)
            self._events.put_nowait(("transition", (ts, {})))
            self._events.put_nowait(("changed", None))
            return
        self._events.put_nowait(("transition", (ts, results)))
