"""One WebSocket: drives a :class:`~reactive.sync.session.SyncSession` with real I/O.

Everything that touches the session goes through one queue of typed events, handled by
one task, so the session sees events in order: client frames (from a reader task),
finished mutations and actions (from their own tasks), computed transitions, watched
queries that changed, ping ticks and token expiry. Effects are carried out in the order
the session emits them.

What keeps one socket from hurting the others:

* Backpressure: the reader takes the next frame only once the previous ones are handled
  (at most :data:`FRAMES_AHEAD` wait), so a client that sends without reading stops being
  read (its TCP window fills) instead of filling memory; a send that a non-reading client
  keeps blocked for ``send_timeout_s`` ends the socket.
* Invalidation in proportion to what changed: the shared query cache tells this socket
  which of its held queries went stale (at publish, synchronously) and when their new
  results are ready; a transition gathers only those and the added ones, never the whole
  query set. Large transitions are computed in a task that yields to the event loop.
* Frames over :data:`PARSE_OFF_LOOP_BYTES` are parsed on a thread, so the event loop
  serving other sockets is never held by one big frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from reactive import _core
from reactive.errors import RetryableError
from reactive.functions import Function
from reactive.server.errors import error_message
from reactive.server.queries import Delivery, SharedQuery
from reactive.server.transport import WebSocketProtocol
from reactive.sync.messages import (
    PARSE_OFF_LOOP_BYTES,
    Authenticate,
    ProtocolError,
    parse_client_message,
)
from reactive.sync.session import (
    PING_INTERVAL_S,
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

FRAMES_AHEAD = 4
"""Client frames read but not yet handled, at most (then the socket is not read)."""
INFLIGHT_BYTES = 64 << 20
"""Bytes of frames whose mutations and actions are queued or running, at most per socket;
past it the socket is not read until some finish (a count limit alone would let 1,000
frames of 16 MiB wait in memory)."""
FAST_PATH_QUERIES = 256
"""A transition over at most this many queries whose results are all held is sent at once,
without a task (the fan-out path); larger ones are computed in a task that yields."""
_YIELD_EVERY = 256
_MAX_TIMER_S = 86_400.0


def _spec_error(message: str) -> QueryResult:
    return QueryResult(
        hashlib.blake2b(message.encode(), digest_size=16).digest(), error_message=message
    )


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    message: Any  # the text, or what parse_client_message made of it (or its ProtocolError)
    parsed: bool
    size: int = 0


@dataclass(frozen=True)
class _Binary:
    pass


@dataclass(frozen=True)
class _Closed:
    pass


@dataclass(frozen=True)
class _Changed:
    pass


@dataclass(frozen=True)
class _MutationDone:
    payload: dict[str, Any]


@dataclass(frozen=True)
class _ActionDone:
    payload: dict[str, Any]


@dataclass(frozen=True)
class _TransitionDone:
    ts: int
    results: dict[int, QueryResult]


@dataclass(frozen=True)
class _PingTick:
    pass


@dataclass(frozen=True)
class _AuthExpiry:
    pass


_Event = (
    _Frame
    | _Binary
    | _Closed
    | _Changed
    | _MutationDone
    | _ActionDone
    | _TransitionDone
    | _PingTick
    | _AuthExpiry
)
_CHANGED = _Changed()
_PING = _PingTick()


class Connection:
    """The server side of one socket."""

    # Slots: a fan-out reads a few fields of thousands of these in a row.
    __slots__ = (
        "__weakref__",
        "_buffered",
        "_cache",
        "_changed_pending",
        "_closed",
        "_connect_timeout_s",
        "_db",
        "_dev",
        "_dirty",
        "_events",
        "_expiry",
        "_expiry_for",
        "_fast",
        "_frame_slots",
        "_idle",
        "_main",
        "_opened_at",
        "_owed",
        "_progress_at",
        "_proto",
        "_queries",
        "_send_started",
        "_send_timeout_s",
        "_tasks",
        "_transport",
        "_watching",
        "query_stale",
        "server",
        "session",
        "ws",
    )

    def __init__(self, server: Server, websocket: WebSocket) -> None:
        self.server = server
        self.ws = websocket
        config = server.config
        self.session = SyncSession(
            authenticate=server.authenticate,
            max_queries=config.max_queries_per_socket,
            max_queued_mutations=config.max_queued_mutations,
            max_inflight_actions=config.max_inflight_actions,
        )
        self._dev = config.dev
        self._db = server.db
        self._cache = server.queries
        self._send_timeout_s = config.send_timeout_s
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._frame_slots = asyncio.Semaphore(FRAMES_AHEAD)
        self._owed = 0  # slots withheld from the reader (see _frame_done)
        self._tasks: set[asyncio.Task[None]] = set()
        # queryId -> (the spec it was acquired for, the shared query or an error result)
        self._queries: dict[int, tuple[QuerySpec, SharedQuery | QueryResult]] = {}
        # shared query -> the ids of this socket's queries that hold it
        self._watching: dict[SharedQuery, set[int]] = {}
        # held shared queries whose result went stale since the last transition
        self._dirty: set[SharedQuery] = set()
        # The cache calls this as a commit that touches a held query is published: the
        # set's own ``add``, so marking thousands of sockets runs no Python frame per
        # socket (an entry is watched only while this socket holds it: no check needed).
        # ``_dirty`` is therefore never replaced, only cleared.
        self.query_stale: Callable[[SharedQuery], None] = self._dirty.add
        # (shared query, its query ids, session.changes) after a fan-out transition: while
        # the session has not changed since, the next one for that query takes
        # SyncSession.transition_fast (see query_ready).
        self._fast: tuple[SharedQuery, tuple[int, ...], int] | None = None
        self._changed_pending = False
        self._send_started: float | None = None
        self._buffered = 0
        self._opened_at = time.monotonic()
        self._connect_timeout_s = config.header_timeout_s
        self._progress_at = time.monotonic()
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_for: float | None = None
        self._main: asyncio.Task[Any] | None = None
        self._closed = False
        # The task waits for its next event (nothing of this socket is being handled).
        self._idle = False
        # uvicorn's protocol when it is reactive's (writes fan-out frames synchronously).
        proto = websocket.scope.get("reactive.protocol")
        self._proto: WebSocketProtocol | None = (
            proto if isinstance(proto, WebSocketProtocol) else None
        )
        # Its transport, when the server exposes it (the stalled-send watch reads its
        # write buffer once a second for every socket: read it from here, not the scope).
        self._transport: asyncio.Transport | None = websocket.scope.get("reactive.transport")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the shared query cache calls these ----------------------------------------------------

    def query_ready(self, entry: SharedQuery, delivery: Delivery | None) -> None:
        """A stale query's new result is computed: time for a transition.

        The fan-out path: when this socket waits for nothing else (its task is idle with no
        event queued, this is its only stale query, no transition or query-set change is
        under way) and its transport takes a frame now, the transition is made and written
        here, synchronously, with no event and no task wake-up; it is the same frame the
        general path sends, and sockets in the same state share it (``delivery``'s memos).
        Otherwise the socket's task computes it.
        """
        dirty = self._dirty
        if entry not in dirty:
            return
        proto = self._proto
        if (
            delivery is not None
            and self._idle
            and len(dirty) == 1
            and not self._closed
            and proto is not None
        ):
            result = delivery.result
            if result is not None and proto.can_write():
                session = self.session
                fast = self._fast
                text: str | None
                if fast is not None and fast[0] is entry and fast[2] == session.changes:
                    # Nothing happened to this socket since its last fan-out transition.
                    text = session.transition_fast(
                        delivery.ts, fast[1], result, delivery.server_ts_ns, delivery.texts
                    )
                else:
                    ids = self._watching[entry]
                    text = session.transition_now(
                        delivery.ts, ids, result, delivery.server_ts_ns, delivery.texts
                    )
                    if text is not None:
                        steady = session.steady_ids(ids)
                        self._fast = None if steady is None else (entry, steady, session.changes)
                if text is not None:
                    dirty.clear()
                    delivery.direct += 1
                    if text:
                        proto.write_text(text, delivery.frames)
                        session.last_send_s = delivery.now_s
                    return
        self._cache.queued_transitions += 1
        self._notify_changed()

    def _post(self, event: _Event) -> None:
        """Queue an event for the socket's task (which is then no longer idle)."""
        self._idle = False
        self._events.put_nowait(event)

    def _notify_changed(self) -> None:
        if not self._changed_pending and not self._closed:
            self._changed_pending = True
            self._post(_CHANGED)

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until it closes."""
        self._main = asyncio.current_task()
        await self.ws.accept()
        self.session.sent_at(time.monotonic())
        self._spawn(self._read(), "reactive-ws-read")
        try:
            events = self._events
            while not self._closed:
                # Idle: waiting with nothing queued (_post ends it as it queues an event).
                self._idle = events.empty()
                try:
                    event = await events.get()
                finally:
                    self._idle = False
                if isinstance(event, _Closed):
                    break
                effects = await self._handle(event)
                await self._apply(effects)
        except asyncio.CancelledError:
            if not self._closed:
                raise  # the server is stopping
            # A send blocked past send_timeout_s: this socket is done.
        finally:
            self._closed = True
            if self._expiry is not None:
                self._expiry.cancel()
            for task in list(self._tasks):
                task.cancel()
            for _, held in self._queries.values():
                if isinstance(held, SharedQuery):
                    self.server.queries.release(held, self)
            self._queries.clear()
            self._watching.clear()
            self._dirty.clear()

    async def _handle(self, event: _Event) -> list[Effect]:
        s = self.session
        if isinstance(event, _Frame):
            if event.parsed:
                effects = s.receive_message(event.message, time.time() * 1000.0, event.size)
            else:
                effects = s.receive(event.message, time.time() * 1000.0)
            self._frame_done()
            self._arm_expiry()
            return effects
        if isinstance(event, _Changed):
            self._changed_pending = False
            return s.watched_changed()
        if isinstance(event, _MutationDone):
            effects = s.mutation_finished(**event.payload)
            self._frame_done(0)
            return effects
        if isinstance(event, _ActionDone):
            effects = s.action_finished(**event.payload)
            self._frame_done(0)
            return effects
        if isinstance(event, _TransitionDone):
            return s.transition_computed(event.ts, event.results, time.time_ns())
        if isinstance(event, _PingTick):
            return s.ping_due(time.monotonic())
        if isinstance(event, _AuthExpiry):
            self._expiry = None
            effects = s.check_auth_expiry(time.time())
            self._arm_expiry()  # not expired yet (a far-off exp is checked daily)
            return effects
        if isinstance(event, _Binary):
            self._frame_done()
            return s.reject_binary()
        return []

    def _frame_done(self, frames: int = 1) -> None:
        """A frame was handled (or work finished): give the reader its slots back.

        A slot is withheld while the socket's queued and running requests hold more than
        INFLIGHT_BYTES of frames; it is given back when they finish.
        """
        self._owed += frames
        while self._owed and self.session.inflight_bytes <= INFLIGHT_BYTES:
            self._owed -= 1
            self._frame_slots.release()

    def _arm_expiry(self) -> None:
        """Time the current identity's expiry (re-armed after every Authenticate)."""
        expires = self.session.auth_expires_at()
        if self._expiry is not None:
            if expires == self._expiry_for:
                return  # the same token: its timer stands
            self._expiry.cancel()
            self._expiry = None
        self._expiry_for = expires
        if expires is None:
            return
        delay = min(max(0.0, expires - time.time()), _MAX_TIMER_S)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(delay, self._post, _AuthExpiry())

    async def _send(self, text: str) -> bool:
        self._send_started = time.monotonic()
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            return False
        finally:
            self._send_started = None
        self.session.sent_at(time.monotonic())
        return True

    async def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                if not await self._send(effect.text):
                    return
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
                ready = self._begin_transition(effect)
                if ready is not None:
                    # Every result is in place: no task, no queue hop (fan-out path).
                    ts, results = ready
                    await self._apply(self.session.transition_computed(ts, results, time.time_ns()))
                    if self._closed:
                        return

    async def _read(self) -> None:
        try:
            while True:
                await self._frame_slots.acquire()
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    if len(text) >= PARSE_OFF_LOOP_BYTES:
                        parsed = await asyncio.to_thread(_parse, text)
                        await self._prepare_auth(parsed)
                        self._post(_Frame(parsed, True, len(text)))
                    elif '"Authenticate"' in text:
                        parsed = _parse(text)
                        await self._prepare_auth(parsed)
                        self._post(_Frame(parsed, True, len(text)))
                    else:
                        self._post(_Frame(text, False))
                elif message.get("bytes") is not None:
                    self._post(_Binary())
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self._post(_Closed())

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await asyncio.wait_for(self.ws.close(code, reason), 5.0)
        if self._main is not None:
            self._main.cancel()

    def _send_stalled(self, now: float) -> bool:
        """True when the client has read nothing of what waits for it for send_timeout_s.

        Watched on the transport's write buffer where the server exposes it (a frame is
        written to the buffer at once; the next send waits while it is full), else on a
        send that has been waiting.
        """
        transport = self._transport
        if transport is not None:
            buffered = transport.get_write_buffer_size()
            if buffered == 0 or buffered < self._buffered:
                self._progress_at = now  # the client took some of it
            self._buffered = buffered
            return buffered > 0 and now - self._progress_at > self._send_timeout_s
        started = self._send_started
        return started is not None and now - started > self._send_timeout_s

    async def _prepare_auth(self, message: Any) -> None:
        """Fetch an auth provider's keys for a token before the session checks it."""
        if isinstance(message, Authenticate):
            await self.server.authenticate.prepare(message.token_type, message.value)

    def ping_due(self, now: float) -> None:
        """The server's ping timer ticked at ``now`` (``time.monotonic()``, s).

        One timer for all sockets, each second.
        """
        if self._closed:
            return
        if not self.session.connected and now - self._opened_at > self._connect_timeout_s:
            # A socket that never says Connect holds a descriptor for nothing: end it.
            self._closed = True
            self._spawn(self._close_quietly(1008, "PolicyViolation: no Connect message"), "close")
            return
        if self._send_stalled(now):
            # The client does not read: cut it off (a graceful close would wait behind
            # the bytes it never reads) and stop serving it.
            log.info(
                "cutting off a socket whose client read nothing for %g s", self._send_timeout_s
            )
            self._closed = True
            transport = self._transport
            if transport is not None:
                transport.abort()
            if self._main is not None:
                self._main.cancel()
            return
        if now - self.session.last_send_s >= PING_INTERVAL_S:
            self._post(_PING)

    # -- functions ---------------------------------------------------------------------------

    def _resolve(self, path: str, kind: str) -> Function[Any]:
        admin = self.session.admin
        return self.server.db._runner.resolve(
            path,
            kind,  # type: ignore[arg-type]
            internal_ok=admin,
            client_words=True,
            admin=admin,
        )

    def _failure(self, request_id: int, exc: Exception) -> dict[str, Any]:
        message, data = error_message(exc, dev=self._dev)
        return {
            "request_id": request_id,
            "error_message": message,
            "error_data_json": data,
            "log_lines": getattr(exc, "log_lines", ()),
        }

    async def _run_mutation(self, effect: RunMutation) -> None:
        session_id = self.session.session_id
        request = (session_id, effect.request_id) if session_id else None
        payload: dict[str, Any]
        try:
            fn = self._resolve(effect.udf_path, "mutation")
            args = _core.from_convex_json(effect.args, "args")
            outcome = await self.server.db._runner.run_mutation(
                fn, args, effect.identity, request, on_commit=self.session.mutation_committed
            )
            payload = {
                "request_id": effect.request_id,
                "ts": outcome.ts,
                "value_json": _core.convex_json(outcome.value, result=True),
                "log_lines": outcome.log_lines,
            }
        except Exception as exc:
            payload = self._failure(effect.request_id, exc)
        self._post(_MutationDone(payload))

    async def _run_action(self, effect: RunAction) -> None:
        payload: dict[str, Any]
        try:
            fn = self._resolve(effect.udf_path, "action")
            args = _core.from_convex_json(effect.args, "args")
            outcome = await self.server.db._runner.run_action(fn, args, effect.identity)
            payload = {
                "request_id": effect.request_id,
                "value_json": _core.convex_json(outcome.value, result=True),
                "log_lines": outcome.log_lines,
            }
        except Exception as exc:
            payload = self._failure(effect.request_id, exc)
        self._post(_ActionDone(payload))

    # -- transitions ---------------------------------------------------------------------------

    def _release(self, query_id: int) -> None:
        held = self._queries.pop(query_id, None)
        if held is None or not isinstance(held[1], SharedQuery):
            return
        entry = held[1]
        self._fast = None
        ids = self._watching.get(entry)
        if ids is not None:
            ids.discard(query_id)
            if not ids:
                del self._watching[entry]
                self._dirty.discard(entry)
        self.server.queries.release(entry, self)

    def _acquire(self, query_id: int, spec: QuerySpec, identity: Any) -> SharedQuery | QueryResult:
        held = self._queries.get(query_id)
        if held is not None and held[0] == spec:
            return held[1]
        self._release(query_id)
        try:
            fn = self._resolve(spec.udf_path, "query")
            args = _core.from_convex_json(spec.args, "args")
            entry: SharedQuery | QueryResult = self.server.queries.acquire(
                fn, args, identity, spec.journal, self
            )
        except Exception as exc:
            entry = _spec_error(error_message(exc, dev=self._dev)[0].split("\n", 1)[-1])
        self._queries[query_id] = (spec, entry)
        if isinstance(entry, SharedQuery):
            self._watching.setdefault(entry, set()).add(query_id)
        return entry

    def _begin_transition(
        self, effect: ComputeTransition, barrier: bool = True
    ) -> tuple[int, dict[int, QueryResult]] | None:
        """Start computing a transition; its results now if every one is held, else ``None``.

        The snapshot is fixed here, together with the set of stale queries: every query
        not in that set holds at it (stale marks arrive synchronously as commits are
        published), so the transition is consistent while naming only what changed.

        On a follower, a transition adding queries first passes a read barrier
        (``barrier``; ``Database.read_barrier``): a new subscription's first result holds
        every commit acknowledged, through any process, before it was asked for.
        """
        for query_id in effect.removed:
            self._release(query_id)
        if effect.reset:
            for query_id in list(self._queries):
                self._release(query_id)
        db = self.server.db
        if barrier and effect.added and (db._follower is not None or db._strict_reads):
            self._spawn(self._after_barrier(effect), "reactive-transition")
            return None
        if effect.min_ts > db.published_timestamp:
            # The commit is durable but its invalidations are not dispatched yet.
            self._spawn(self._after_publish(effect), "reactive-transition")
            return None
        ts = db.published_timestamp
        dirty = self._dirty.copy()
        self._dirty.clear()
        stale_ids = [qid for entry in dirty for qid in self._watching.get(entry, ())]
        if not stale_ids and not effect.added and effect.min_ts == 0:
            return 0, {}  # nothing changed: the session sends nothing unless it must
        added = effect.added
        if len(stale_ids) + len(added) > FAST_PATH_QUERIES:
            self._spawn(self._compute(ts, added, effect.identity, stale_ids), "reactive-transition")
            return None
        results: dict[int, QueryResult] = {}
        for query_id, spec in added.items():
            self._acquire(query_id, spec, effect.identity)
        for query_id in (*stale_ids, *added):
            held = self._queries[query_id][1]
            if isinstance(held, SharedQuery):
                result = held.cached_at(ts)
                if result is None:
                    self._spawn(
                        self._compute(ts, {}, effect.identity, [*stale_ids, *added]),
                        "reactive-transition",
                    )
                    return None
                results[query_id] = result
            else:
                results[query_id] = held
        return ts, results

    async def _after_barrier(self, effect: ComputeTransition) -> None:
        try:
            head = await self.server.db.read_barrier()
        except Exception as exc:
            # Without its database a follower cannot tell what is current: the client
            # reconnects (to another process, behind a load balancer) and resubscribes.
            log.warning("closing a sync connection: the read barrier failed: %s", exc)
            await self._close_quietly(1013, "TryAgainLater: this server cannot reach its database")
            return
        await self._after_publish(
            ComputeTransition(
                effect.added, frozenset(), effect.identity, max(effect.min_ts, head), False
            ),
            barrier=False,
        )

    async def _after_publish(self, effect: ComputeTransition, barrier: bool = True) -> None:
        db = self.server.db
        deadline = time.monotonic() + 30.0
        while db.published_timestamp < effect.min_ts and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
        # Still min_ts: the transition must reach it (a mutation's commit), even if no
        # result changed.
        ready = self._begin_transition(
            ComputeTransition(effect.added, frozenset(), effect.identity, effect.min_ts, False),
            barrier,
        )
        if ready is not None:
            self._post(_TransitionDone(*ready))
        # else: _begin_transition spawned the computation, which reports itself.

    async def _compute(
        self,
        ts: int,
        added: dict[int, QuerySpec],
        identity: Any,
        query_ids: list[int],
    ) -> None:
        db = self.server.db
        results: dict[int, QueryResult] = {}
        fresh: list[SharedQuery] = []
        try:
            for n, (query_id, spec) in enumerate(added.items(), 1):
                held = self._acquire(query_id, spec, identity)
                if isinstance(held, SharedQuery):
                    fresh.append(held)
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            for n, query_id in enumerate((*query_ids, *added), 1):
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                held_pair = self._queries.get(query_id)
                if held_pair is None:
                    continue  # released meanwhile
                held = held_pair[1]
                if not isinstance(held, SharedQuery):
                    results[query_id] = held
                    continue
                try:
                    result = held.cached_at(ts)
                    results[query_id] = result if result is not None else await held.result_at(ts)
                except RetryableError:
                    raise
                except Exception as exc:
                    # This query cannot run (not a passing state of the engine): it fails,
                    # alone, as QueryFailed; the other queries and the socket go on.
                    log.warning("query %s failed outside its function: %r", held.fn.path, exc)
                    message = error_message(exc, dev=self._dev)[0]
                    results[query_id] = _spec_error(message.split("\n", 1)[-1])
        except RetryableError as exc:  # e.g. the snapshot left retention: compute again
            log.warning("computing a transition failed, retrying: %s", exc)
            await asyncio.sleep(0.05)
            for entry in self._watching:
                self._dirty.add(entry)
            self._post(_TransitionDone(ts, {}))
            self._notify_changed()
            return
        # Queries acquired after `ts` may have been invalidated before they were watched
        # by this socket: those that no longer hold now are computed again.
        now = db.published_timestamp
        late = [entry for entry in fresh if entry.cached_at(now) is None]
        self._post(_TransitionDone(ts, results))
        if late:
            self._dirty.update(late)
            self._notify_changed()


def _parse(text: str) -> Any:
    try:
        return parse_client_message(text)
    except ProtocolError as exc:
        return exc
    except RecursionError:
        return ProtocolError("the message is nested too deeply")
