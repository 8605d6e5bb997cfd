"""``reactive.client.Client``: an async Python client of the Convex sync protocol.

It speaks to ``python -m reactive.server`` (or any server of the protocol) over one
WebSocket: ``query``, ``mutation``, ``action`` and ``subscribe`` (an async iterator of
results). Python ``int`` travels as int64 (``{"$integer": …}``), ``float`` as float64.

On a lost connection it reconnects with exponential backoff (100 ms doubling to
``max_backoff_s``, with jitter), keeping its session id, re-adding every live query and
resending every mutation not yet released (the server answers a replayed mutation from its
replay cache instead of running it again; actions in flight fail, as in the JS client).

A mutation's result is returned once a transition at or after its commit has arrived, so
a ``query`` or subscription result seen afterwards includes its writes (spec §6.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

import websockets

from reactive import _core
from reactive.errors import ConvexError, DatabaseClosedError, FunctionError, ReactiveError
from reactive.functions import (
    Function,
    FunctionReference,
    NoArgs,
    call_arguments,
    function_path,
)
from reactive.pytypes import to_value
from reactive.sync.messages import decode_ts, dumps, encode_ts, loads

__all__ = ["Client", "ClientSubscription"]

log = logging.getLogger("reactive.client")

R = TypeVar("R")
P = ParamSpec("P")


def _sync_url(url: str) -> str:
    if url.startswith("https://"):
        base = "wss://" + url[len("https://") :]
    elif url.startswith("http://"):
        base = "ws://" + url[len("http://") :]
    elif url.startswith(("ws://", "wss://")):
        base = url
    else:
        raise ValueError(f"the deployment URL must start with http:// or https://, not {url!r}")
    return base.rstrip("/") + "/api/sync"


def _argument_object(args: Any) -> Any:
    """The argument object sent: ``{}`` for none, dataclass and pydantic instances as dicts."""
    return {} if args is None else to_value(args)


def _error(message: str, data: Any, has_data: bool) -> ReactiveError:
    if has_data:
        err = ConvexError(data)
        err.args = (message,)
        return err
    return FunctionError(message)


@dataclass
class _Query:
    path: str
    args: Any
    journal: str | None = None
    value: Any = None
    error: ReactiveError | None = None
    has_result: bool = False
    listeners: list[asyncio.Queue[tuple[bool, Any]]] = field(default_factory=list)
    # The socket (generation) on which the server was told about this query.
    announced: int = -1


@dataclass
class _Request:
    kind: str
    message: dict[str, Any]
    future: asyncio.Future[Any]
    sent: bool = False
    ts: int | None = None  # a completed mutation waits for a transition at or after ts
    value: Any = None


class ClientSubscription(Generic[R]):
    """An async iterator over a query's results: the current one, then each change.

    ``ClientSubscription[R]`` yields the query's result type ``R`` (``Any`` for a path).
    Raises ``ConvexError`` (with ``.data``) or ``FunctionError`` when the query fails.
    """

    def __init__(self, client: Client, query_id: int) -> None:
        self._client = client
        self._query_id = query_id
        self._queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._closed = False

    def __aiter__(self) -> ClientSubscription[R]:
        return self

    async def __anext__(self) -> R:
        if self._closed:
            raise StopAsyncIteration
        ok, value = await self._queue.get()
        if ok is None:
            raise StopAsyncIteration
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]  # the server's result of a query typed R

    async def get(self, timeout_s: float | None = None) -> R:
        """The next result, waiting at most ``timeout_s`` (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self.__anext__(), timeout_s)

    def close(self) -> None:
        """Stop the subscription."""
        if not self._closed:
            self._closed = True
            self._client._unsubscribe(self._query_id, self._queue)
            self._queue.put_nowait((None, None))  # type: ignore[arg-type]

    async def __aenter__(self) -> ClientSubscription[R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A client of one deployment URL (``http://127.0.0.1:3210``).

    Args:
        url: The server's URL (``http(s)://`` or ``ws(s)://``).
        auth_token: A user JWT sent in ``Authenticate``.
        admin_key: An admin key (instead of a user token).
        max_backoff_s: Longest wait between reconnection attempts.

    Use ``async with Client(url) as client:`` or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        admin_key: str | None = None,
        max_backoff_s: float = 16.0,
    ) -> None:
        self.url = _sync_url(url)
        self._auth = ("User", auth_token) if auth_token else ("Admin", admin_key)
        if not auth_token and not admin_key:
            self._auth = None  # type: ignore[assignment]
        self.max_backoff_s = max_backoff_s
        self.session_id = str(uuid.uuid4())
        self._queries: dict[int, _Query] = {}
        self._query_ids = itertools.count()
        self._request_ids = itertools.count()
        self._requests: dict[int, _Request] = {}
        self._ws: Any = None
        self._query_set = 0
        self._version: tuple[int, int, int] = (0, 0, 0)
        self._max_ts = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self.reconnects = 0
        self._generation = 0
        self._connection_count = 0
        self._last_close = "InitialConnect"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure_started(self) -> None:
        if self._closed:
            raise DatabaseClosedError("the client is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="reactive-client")

    async def close(self) -> None:
        """Close the connection; pending calls fail with ``DatabaseClosedError``."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        closed = DatabaseClosedError("the client is closed")
        for req in self._requests.values():
            if not req.future.done():
                req.future.set_exception(closed)
        self._requests.clear()
        for q in self._queries.values():
            for listener in q.listeners:
                listener.put_nowait((None, None))  # type: ignore[arg-type]

    # -- the connection -----------------------------------------------------------------

    async def _send(self, message: dict[str, Any] | str) -> None:
        if self._ws is None:
            return
        text = message if isinstance(message, str) else dumps(message)
        await self._ws.send(text)

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with websockets.connect(
                    self.url, max_size=None, open_timeout=10, ping_interval=20
                ) as ws:
                    self._ws = ws
                    await self._opened()
                    attempt = 0
                    async for frame in ws:
                        if isinstance(frame, bytes):
                            continue
                        if not await self._handle(loads(frame)):
                            break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_close = f"{type(exc).__name__}: {exc}"[:200]
                log.debug("connection lost: %s", exc)
            finally:
                self._ws = None
                self._connected.clear()
            if self._closed:
                return
            self.reconnects += 1
            delay = min(0.1 * 2**attempt, self.max_backoff_s) * (0.5 + random.random() / 2)
            attempt += 1
            await asyncio.sleep(delay)

    async def _opened(self) -> None:
        """A new socket: Connect, Authenticate, re-add queries, resend requests."""
        self._version = (0, 0, 0)
        self._generation += 1
        connect: dict[str, Any] = {
            "type": "Connect",
            "sessionId": self.session_id,
            "connectionCount": self._connection_count,
            "lastCloseReason": self._last_close,
            "clientTs": 0,
        }
        if self._max_ts:
            connect["maxObservedTimestamp"] = encode_ts(self._max_ts)
        self._connection_count += 1
        await self._send(connect)
        if self._auth is not None:
            token_type, value = self._auth
            await self._send(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": token_type, "value": value}
            )
        adds = [self._add(qid, q) for qid, q in self._queries.items()]
        for q in self._queries.values():
            q.announced = self._generation
        self._query_set = 1
        await self._send(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": adds}
        )
        for rid, req in list(self._requests.items()):
            if req.kind == "action" and req.sent:
                # As the JS client: an action in flight may or may not have run.
                req.future.set_exception(
                    FunctionError("connection lost while the action was in flight")
                )
                del self._requests[rid]
                continue
            req.sent = True
            await self._send(req.message)
        self._connected.set()

    @staticmethod
    def _add(query_id: int, q: _Query) -> dict[str, Any]:
        add: dict[str, Any] = {
            "type": "Add",
            "queryId": query_id,
            "udfPath": q.path,
            "args": [q.args],
        }
        if q.journal is not None:
            add["journal"] = q.journal
        return add

    async def _handle(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "Transition":
            start = msg["startVersion"]
            if (start["querySet"], start["identity"], decode_ts(start["ts"])) != self._version:
                log.warning("transition from an unexpected version: reconnecting")
                return False
            for mod in msg.get("modifications", []):
                self._apply(mod)
            end = msg["endVersion"]
            self._version = (end["querySet"], end["identity"], decode_ts(end["ts"]))
            self._max_ts = max(self._max_ts, self._version[2])
            self._release(self._version[2])
        elif kind == "MutationResponse":
            req = self._requests.get(msg["requestId"])
            if req is None:
                return True
            if msg.get("success"):
                req.ts = decode_ts(msg["ts"])
                req.value = _core.from_convex_json(msg.get("result"), "result")
                self._max_ts = max(self._max_ts, req.ts)
            else:
                del self._requests[msg["requestId"]]
                data = msg.get("errorData")
                err = _error(
                    str(msg.get("result")),
                    None if data is None else _core.from_convex_json(data, "errorData"),
                    "errorData" in msg,
                )
                if not req.future.done():
                    req.future.set_exception(err)
        elif kind == "ActionResponse":
            req = self._requests.pop(msg["requestId"], None)
            if req is not None and not req.future.done():
                if msg.get("success"):
                    req.future.set_result(_core.from_convex_json(msg.get("result"), "result"))
                else:
                    data = msg.get("errorData")
                    req.future.set_exception(
                        _error(
                            str(msg.get("result")),
                            None if data is None else _core.from_convex_json(data, "errorData"),
                            "errorData" in msg,
                        )
                    )
        elif kind == "FatalError":
            log.error("the server sent FatalError: %s", msg.get("error"))
            return False
        elif kind == "AuthError":
            log.error("authentication refused: %s", msg.get("error"))
            return False
        return True

    def _apply(self, mod: dict[str, Any]) -> None:
        q = self._queries.get(mod.get("queryId", -1))
        if q is None:
            return
        kind = mod.get("type")
        if kind == "QueryUpdated":
            q.value = _core.from_convex_json(mod.get("value"), "value")
            q.error = None
            q.journal = mod.get("journal")
            q.has_result = True
            for listener in q.listeners:
                listener.put_nowait((True, q.value))
        elif kind == "QueryFailed":
            data = mod.get("errorData")
            q.error = _error(
                str(mod.get("errorMessage")),
                None if data is None else _core.from_convex_json(data, "errorData"),
                "errorData" in mod,
            )
            q.journal = mod.get("journal")
            q.has_result = True
            for listener in q.listeners:
                listener.put_nowait((False, q.error))

    def _release(self, ts: int) -> None:
        for rid, req in list(self._requests.items()):
            if req.kind == "mutation" and req.ts is not None and req.ts <= ts:
                del self._requests[rid]
                if not req.future.done():
                    req.future.set_result(req.value)

    # -- calls ---------------------------------------------------------------------------

    async def _modify(self, modification: dict[str, Any], query: _Query | None = None) -> None:
        if self._ws is None or not self._connected.is_set():
            return  # an Add goes with the next socket's ModifyQuerySet
        if query is not None:
            if query.announced == self._generation:
                return  # already added on this socket
            query.announced = self._generation
        base = self._query_set
        self._query_set += 1
        await self._send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": base + 1,
                "modifications": [modification],
            }
        )

    @overload
    def subscribe(
        self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs
    ) -> ClientSubscription[R]: ...

    @overload
    def subscribe(
        self, path: Function[R], args: Mapping[str, Any] | None, /
    ) -> ClientSubscription[R]: ...

    @overload
    def subscribe(
        self, path: FunctionReference[Literal["query"], R, [NoArgs]], /
    ) -> ClientSubscription[R]: ...

    @overload
    def subscribe(
        self,
        path: FunctionReference[Literal["query"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ClientSubscription[R]: ...

    @overload
    def subscribe(
        self, path: str, args: Mapping[str, Any] | None = None, /
    ) -> ClientSubscription[Any]: ...

    @overload
    def subscribe(self, path: str, /, **kwargs: Any) -> ClientSubscription[Any]: ...

    def subscribe(
        self, path: str | Function[Any] | FunctionReference[Any, Any], /, *args: Any, **kwargs: Any
    ) -> ClientSubscription[Any]:
        """Watch a query: ``async for value in client.subscribe(path, args)``.

        ``path`` and the arguments are as for :meth:`query`.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            FunctionNotFoundError: a function object without a path (defined in
                ``__main__``).
        """
        arguments = call_arguments(path, args, kwargs)
        return self._subscribe(function_path(path), arguments)

    def _subscribe(self, path: str, args: Any) -> ClientSubscription[Any]:
        self._ensure_started()
        query_id = next(self._query_ids)
        args_json = loads(_core.convex_json(_argument_object(args)))
        q = _Query(path, args_json)
        sub: ClientSubscription[Any] = ClientSubscription(self, query_id)
        q.listeners.append(sub._queue)
        self._queries[query_id] = q
        asyncio.get_running_loop().create_task(self._modify(self._add(query_id, q), q))
        return sub

    def _unsubscribe(self, query_id: int, queue: asyncio.Queue[tuple[bool, Any]]) -> None:
        q = self._queries.get(query_id)
        if q is None:
            return
        with contextlib.suppress(ValueError):
            q.listeners.remove(queue)
        if not q.listeners:
            del self._queries[query_id]
            if not self._closed and q.announced == self._generation:
                asyncio.get_running_loop().create_task(
                    self._modify({"type": "Remove", "queryId": query_id})
                )

    @overload
    async def query(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def query(self, path: Function[R], args: Mapping[str, Any] | None, /) -> R: ...

    @overload
    async def query(self, path: FunctionReference[Literal["query"], R, [NoArgs]], /) -> R: ...

    @overload
    async def query(
        self,
        path: FunctionReference[Literal["query"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def query(self, path: str, args: Mapping[str, Any] | None = None, /) -> Any: ...

    @overload
    async def query(self, path: str, /, **kwargs: Any) -> Any: ...

    async def query(
        self, path: str | Function[Any] | FunctionReference[Any, Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Run a query once: subscribe, take the first result, unsubscribe.

        ``path`` is ``"module:function"``, one of the app's function objects (its path, or
        one derived from its module: :func:`reactive.functions.function_path`), or a
        generated :class:`~reactive.functions.QueryReference`. The arguments are one dict
        (``client.query(messages.list, {"channel": "x"})``) or keyword arguments
        (``client.query(messages.list, channel="x")``); with a function object or a
        reference, mypy and pyright check them and type the result.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            ConvexError: the query raised ConvexError (``.data`` holds its data).
            FunctionError: the query failed otherwise (an unknown function included).
        """
        sub = self._subscribe(function_path(path), call_arguments(path, args, kwargs))
        try:
            return await sub.__anext__()
        finally:
            sub.close()

    async def _request(self, kind: str, path: str, args: Any) -> Any:
        self._ensure_started()
        request_id = next(self._request_ids)
        message = {
            "type": "Mutation" if kind == "mutation" else "Action",
            "requestId": request_id,
            "udfPath": path,
            "args": [loads(_core.convex_json(_argument_object(args)))],
        }
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        req = _Request(kind, message, fut)
        self._requests[request_id] = req
        if self._ws is not None and self._connected.is_set():
            req.sent = True
            with contextlib.suppress(Exception):
                await self._send(message)
        return await fut

    @overload
    async def mutation(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def mutation(self, path: Function[R], args: Mapping[str, Any] | None, /) -> R: ...

    @overload
    async def mutation(self, path: FunctionReference[Literal["mutation"], R, [NoArgs]], /) -> R: ...

    @overload
    async def mutation(
        self,
        path: FunctionReference[Literal["mutation"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def mutation(self, path: str, args: Mapping[str, Any] | None = None, /) -> Any: ...

    @overload
    async def mutation(self, path: str, /, **kwargs: Any) -> Any: ...

    async def mutation(
        self, path: str | Function[Any] | FunctionReference[Any, Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Run a mutation; returns its result once a later transition reflects it.

        ``path`` and the arguments are as for :meth:`query`.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            ConvexError: the mutation raised ConvexError (``.data`` holds its data).
            FunctionError: the mutation failed otherwise.
        """
        arguments = call_arguments(path, args, kwargs)
        return await self._request("mutation", function_path(path), arguments)

    @overload
    async def action(self, path: Function[R, P], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def action(self, path: Function[R], args: Mapping[str, Any] | None, /) -> R: ...

    @overload
    async def action(self, path: FunctionReference[Literal["action"], R, [NoArgs]], /) -> R: ...

    @overload
    async def action(
        self,
        path: FunctionReference[Literal["action"], R, P],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def action(self, path: str, args: Mapping[str, Any] | None = None, /) -> Any: ...

    @overload
    async def action(self, path: str, /, **kwargs: Any) -> Any: ...

    async def action(
        self, path: str | Function[Any] | FunctionReference[Any, Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Run an action; returns its result.

        ``path`` and the arguments are as for :meth:`query`.

        Raises:
            TypeError: an argument dict together with keyword arguments, or positional
                arguments the function does not take.
            ConvexError: the action raised ConvexError.
            FunctionError: it failed otherwise, or the connection was lost while it ran.
        """
        arguments = call_arguments(path, args, kwargs)
        return await self._request("action", function_path(path), arguments)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until a socket is open and set up."""
        self._ensure_started()
        await asyncio.wait_for(self._connected.wait(), timeout_s)
