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

Auth: a fixed token (``auth_token=``, ``set_auth(token)``), an admin key, or a token
fetcher (``fetch_token=``, ``set_auth(fetch)``: ``async def fetch(*, force_refresh) -> str |
None``, as the official JS client's ``setAuth``). With a fetcher the client fetches a fresh
token (``force_refresh=True``) shortly before its ``exp`` (``refresh_leeway_s``), when the
server says it expired (``AuthError``, ``authUpdateAttempted: false``: a new ``Authenticate``
on the open socket, with the next ``baseVersion``) and when the server refuses it (the
server closes the socket: the client reconnects with the fresh token); mutations and
actions wait while it fetches. When no fresh token is to be had (no fetcher, the fetcher
returns ``None`` or the refused token again, or the fresh token is refused too), the client
drops the token and goes on unauthenticated, as the server does: each subscription raises
:class:`~reactive.errors.AuthError` once (then yields results without the identity), and
mutations and actions the server did not run under the token fail with ``AuthError``
instead of being sent again without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

import jwt
import websockets

from reactive import _core
from reactive.errors import (
    AuthError,
    ConvexError,
    DatabaseClosedError,
    FunctionError,
    ReactiveError,
)
from reactive.functions import (
    Function,
    FunctionReference,
    NoArgs,
    call_arguments,
    function_path,
)
from reactive.pytypes import to_value
from reactive.sync.messages import decode_ts, dumps, encode_ts, loads

__all__ = ["Client", "ClientSubscription", "TokenFetcher"]

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
    generation: int = -1  # the socket it was last sent on (-1: never sent)
    ts: int | None = None  # a completed mutation waits for a transition at or after ts
    value: Any = None


class TokenFetcher(Protocol):
    """Returns a user's JWT, or ``None`` when the user is signed out (an async function).

    Called with ``force_refresh=False`` for the first token (a cached one will do), and
    with ``force_refresh=True`` when the token is about to expire or the server refused or
    expired it: then it must return a fresh token, not the cached one.
    """

    def __call__(self, *, force_refresh: bool) -> Awaitable[str | None]:
        """The token, fresh (not cached) when ``force_refresh``."""
        ...


@dataclass(eq=False)
class _Auth:
    """What the client authenticates with."""

    kind: str  # "User" or "Admin"
    token: str | None  # the token (or admin key) to send; None: to be fetched first
    fetch: TokenFetcher | None = None
    on_change: Callable[[bool], object] | None = None
    # The token came from a forced refresh and the server has not accepted it yet: a
    # refusal is final (no second refresh).
    forced: bool = False
    # The server refused `refused` (for `reason`): the next fetch forces a refresh.
    force_next: bool = False
    refused: str | None = None
    reason: str = ""


class ClientSubscription(Generic[R]):
    """An async iterator over a query's results: the current one, then each change.

    ``ClientSubscription[R]`` yields the query's result type ``R`` (``Any`` for a path).
    Raises ``ConvexError`` (with ``.data``) or ``FunctionError`` when the query fails, and
    ``AuthError`` once when the server refused the client's token and no fresh one could
    be had (the next results are those without the identity).
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
        auth_token: A user JWT sent in ``Authenticate``, for the client's life: once the
            server refuses it (or it expires), the client goes on without it (see
            :meth:`set_auth`).
        fetch_token: Instead of ``auth_token``, a :class:`TokenFetcher`: the client asks it
            for a token, and for a fresh one whenever the token expires or is refused.
        admin_key: An admin key (instead of a user token).
        max_backoff_s: Longest wait between reconnection attempts.
        refresh_leeway_s: With ``fetch_token``, how long before a token's ``exp`` a fresh
            one is fetched (tokens that live no longer than this are refreshed when the
            server says they expired).

    Use ``async with Client(url) as client:`` or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        fetch_token: TokenFetcher | None = None,
        admin_key: str | None = None,
        max_backoff_s: float = 16.0,
        refresh_leeway_s: float = 10.0,
    ) -> None:
        self.url = _sync_url(url)
        if sum(x is not None and x != "" for x in (auth_token, fetch_token, admin_key)) > 1:
            raise ValueError("give one of auth_token, fetch_token and admin_key")
        self._auth: _Auth | None = None
        if auth_token:
            self._auth = _Auth("User", auth_token)
        elif fetch_token is not None:
            self._auth = _Auth("User", None, fetch=fetch_token)
        elif admin_key:
            self._auth = _Auth("Admin", admin_key)
        self.max_backoff_s = max_backoff_s
        self.refresh_leeway_s = refresh_leeway_s
        self._auth_version = 0  # Authenticate messages sent on this socket
        self._auth_confirm: int | None = None  # the identity version that confirms the last
        self._authenticated: bool | None = None  # what on_change was last told
        self._auth_task: asyncio.Task[None] | None = None  # fetching and sending a token
        self._holding = False  # mutations and actions wait: a token is on its way
        self._refresh_timer: asyncio.TimerHandle | None = None
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
        self._cancel_refresh()
        if self._auth_task is not None:
            self._auth_task.cancel()
            self._auth_task = None
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
                await self._prepare_auth()
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
        self._auth_version = 0
        self._auth_confirm = None
        self._cancel_refresh()
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
        auth = self._auth
        if auth is not None and auth.token is not None:
            await self._send_authenticate()
        adds = [self._add(qid, q) for qid, q in self._queries.items()]
        for q in self._queries.values():
            q.announced = self._generation
        self._query_set = 1
        await self._send(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": adds}
        )
        if auth is not None and auth.token is None and self._auth_task is None:
            # set_auth(fetch) came while this socket was opening: fetch, then send.
            self._start_auth_task(auth, force=auth.force_next, must_change=auth.force_next)
        await self._flush()
        self._connected.set()

    async def _flush(self) -> None:
        """Send the requests not yet sent on this socket (unless a token is on its way).

        A mutation sent on an earlier socket is sent again (the server answers it from its
        replay cache); an action is not: as in the JS client, it may or may not have run.
        """
        if self._ws is None or self._holding:
            return
        generation = self._generation
        for rid, req in list(self._requests.items()):
            if req.generation == generation or self._requests.get(rid) is not req:
                continue
            if req.kind == "action" and req.generation != -1:
                del self._requests[rid]
                if not req.future.done():
                    req.future.set_exception(
                        FunctionError("connection lost while the action was in flight")
                    )
                continue
            req.generation = generation
            await self._send(req.message)

    # -- auth ------------------------------------------------------------------------------

    def set_auth(
        self,
        token: str | TokenFetcher | None,
        *,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        """Call as a user from now on: ``token`` is a JWT or a :class:`TokenFetcher`.

        With a fetcher, the client fetches a token now (``force_refresh=False``) and a
        fresh one (``force_refresh=True``) before it expires, when the server says it
        expired and when the server refuses it; mutations and actions wait meanwhile. A
        fixed token is dropped once the server refuses it or it expires. Either way, when
        no fresh token can be had, the client goes on unauthenticated: subscriptions raise
        :class:`~reactive.errors.AuthError` once, and mutations and actions the server
        did not run under the token fail with it. ``on_change(True)`` is called when the
        server accepts a token, ``on_change(False)`` when the client goes on without one.
        ``None`` is :meth:`clear_auth`. Takes effect on the open socket (a new
        ``Authenticate``), or with the next one.
        """
        if token is None:
            self.clear_auth()
            return
        if isinstance(token, str):
            if not token.strip():
                raise ValueError("the token must not be empty (clear_auth() signs out)")
            auth = _Auth("User", token, on_change=on_change)
        elif callable(token):
            auth = _Auth("User", None, fetch=token, on_change=on_change)
        else:
            raise TypeError(f"set_auth takes a token (str) or a token fetcher, not {token!r}")
        self._replace_auth(auth)

    def clear_auth(self) -> None:
        """Call without a user from now on (the open socket is told at once)."""
        self._replace_auth(None)

    def _replace_auth(self, auth: _Auth | None) -> None:
        self._cancel_refresh()
        if self._auth_task is not None:
            self._auth_task.cancel()  # it was fetching for the previous auth
            self._auth_task = None
        self._holding = False
        self._auth = auth
        self._authenticated = None
        if self._task is not None and self._ws is not None and self._connected.is_set():
            self._start_auth_task(auth, force=False, must_change=False)

    def _start_auth_task(self, auth: _Auth | None, *, force: bool, must_change: bool) -> None:
        """Fetch a token if needed and send ``Authenticate``; requests wait meanwhile."""
        self._holding = True
        self._auth_task = asyncio.get_running_loop().create_task(
            self._reauthenticate(auth, force=force, must_change=must_change),
            name="reactive-client-auth",
        )

    async def _reauthenticate(self, auth: _Auth | None, *, force: bool, must_change: bool) -> None:
        """Authenticate the open socket again, then send the requests that waited."""
        try:
            await self._fetch_and_authenticate(auth, force=force, must_change=must_change)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket closed: the next one authenticates
            log.debug("sending Authenticate failed: %s", exc)
        finally:
            if self._auth_task is asyncio.current_task():
                self._auth_task = None
                self._holding = False
        with contextlib.suppress(Exception):
            await self._flush()

    async def _fetch_and_authenticate(
        self, auth: _Auth | None, *, force: bool, must_change: bool
    ) -> None:
        """Send ``Authenticate`` on the open socket, with a fresh token if ``force``.

        ``must_change``: the current token expired on the server; the same one again (or
        none) ends in :meth:`_give_up`.
        """
        generation = self._generation
        if auth is not None and auth.fetch is not None and (force or auth.token is None):
            previous = auth.token or auth.refused
            token = await self._fetch(auth, force)
            if self._auth is not auth:
                return  # replaced meanwhile (its own task takes over)
            if must_change and (token is None or token == previous):
                reason = auth.reason or "the authentication token expired"
                self._give_up(auth, f"{reason}, and the token fetcher gave no fresh one")
                return
            if token is None:  # signed out
                self._auth = None
                self._report(False, auth.on_change)
                if self._auth_version == 0:
                    return  # this socket never sent a token
            elif token == auth.token:
                return  # a refresh that gave the same (still valid) token
            else:
                auth.token, auth.forced = token, force
        if self._ws is not None and self._generation == generation:
            await self._send_authenticate()

    async def _fetch(self, auth: _Auth, force: bool) -> str | None:
        """The fetcher's token (``None``: signed out, or the fetcher failed)."""
        assert auth.fetch is not None
        try:
            result: Any = auth.fetch(force_refresh=force)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the token fetcher raised: going on without a token")
            return None
        if result is not None and not isinstance(result, str):
            log.error("the token fetcher returned %r, not a str or None", type(result).__name__)
            return None
        return result or None

    async def _prepare_auth(self) -> None:
        """Before a socket opens: a token from the fetcher if there is none yet."""
        task = self._auth_task
        if task is not None and not task.done():
            await asyncio.wait({task})  # a fetch under way: use its token
        auth = self._auth
        if auth is None or auth.fetch is None or auth.token is not None:
            return
        force = auth.force_next
        token = await self._fetch(auth, force)
        if self._auth is not auth:
            return
        if force and (token is None or token == auth.refused):
            self._give_up(auth, f"{auth.reason}, and the token fetcher gave no fresh one")
            return
        if token is None:  # signed out
            self._auth = None
            self._report(False, auth.on_change)
            return
        auth.token, auth.forced, auth.force_next = token, force, False

    async def _send_authenticate(self) -> None:
        """``Authenticate`` with the current token (or ``tokenType: None``)."""
        auth = self._auth
        message: dict[str, Any] = {"type": "Authenticate", "baseVersion": self._auth_version}
        if auth is None or auth.token is None:
            message["tokenType"] = "None"
        else:
            message["tokenType"] = auth.kind
            message["value"] = auth.token
        self._auth_version += 1
        # The transition that reaches this identity version confirms the token.
        self._auth_confirm = self._auth_version if auth is not None else None
        await self._send(message)

    def _auth_confirmed(self) -> None:
        auth = self._auth
        if auth is None:
            return
        auth.forced = auth.force_next = False
        auth.refused = None
        self._report(True, auth.on_change)
        self._schedule_refresh(auth)

    def _auth_error(self, msg: dict[str, Any]) -> bool:
        """The server's ``AuthError``; False when the socket is done (a refused token)."""
        error = str(msg.get("error") or "authentication failed")
        auth = self._auth
        if msg.get("authUpdateAttempted") is False:
            # The token expired on this open socket: the server goes on without it.
            if auth is None or self._auth_task is not None or self._auth_confirm is not None:
                return True  # no token, or a fresh one is already on its way
            auth.reason = "the authentication token expired"
            if auth.fetch is not None:
                log.info("the authentication token expired: fetching a fresh one")
                self._start_auth_task(auth, force=True, must_change=True)
            else:
                self._give_up(auth, "the authentication token expired")
            return True
        # The server refused a token and closes the socket.
        self._auth_confirm = None
        if auth is not None:
            auth.reason = f"the server refused the authentication token ({error})"
            if auth.fetch is not None and not auth.forced:
                log.info("%s: fetching a fresh one", auth.reason)
                auth.refused, auth.token, auth.force_next = auth.token, None, True
            else:
                self._give_up(auth, auth.reason, closing=True)
        return False

    def _give_up(self, auth: _Auth, reason: str, *, closing: bool = False) -> None:
        """No (fresh) token to be had: go on unauthenticated, and tell the callers.

        ``closing``: the server refused the token and closed the socket, so nothing sent
        after the refused ``Authenticate`` ran; otherwise (an expiry) the requests already
        sent on the open socket are the server's to answer.
        """
        if self._auth is not auth:
            return
        log.warning("%s: going on unauthenticated", reason)
        self._auth = None
        self._cancel_refresh()
        text = f"{reason}: the client goes on unauthenticated"
        generation = self._generation
        for rid, req in list(self._requests.items()):
            if req.ts is not None:
                if closing:
                    # Committed under the token: released now, not sent again without it.
                    del self._requests[rid]
                    if not req.future.done():
                        req.future.set_result(req.value)
                continue
            if closing or req.generation != generation:
                del self._requests[rid]
                if not req.future.done():
                    req.future.set_exception(
                        AuthError(f"{text}; this {req.kind} was not sent again without the token")
                    )
        for q in self._queries.values():
            for listener in q.listeners:
                listener.put_nowait((False, AuthError(text)))
        self._report(False, auth.on_change)

    def _report(self, authenticated: bool, on_change: Callable[[bool], object] | None) -> None:
        if self._authenticated == authenticated:
            return
        self._authenticated = authenticated
        if on_change is not None:
            try:
                on_change(authenticated)
            except Exception:
                log.exception("on_change raised")

    def _schedule_refresh(self, auth: _Auth) -> None:
        """With a fetcher: fetch a fresh token ``refresh_leeway_s`` before ``exp``."""
        self._cancel_refresh()
        if auth.fetch is None or auth.token is None or auth.kind != "User":
            return
        try:
            claims = jwt.decode(auth.token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return
        now = time.time()
        issued = iat if isinstance(iat, (int, float)) and not isinstance(iat, bool) else now
        if exp - issued <= self.refresh_leeway_s:
            return  # too short-lived: refreshed when the server says it expired
        delay = min(max(0.0, exp - self.refresh_leeway_s - now), 86_400.0)
        self._refresh_timer = asyncio.get_running_loop().call_later(
            delay, self._refresh_due, auth, self._generation
        )

    def _refresh_due(self, auth: _Auth, generation: int) -> None:
        self._refresh_timer = None
        if (
            self._auth is auth
            and self._generation == generation
            and self._auth_task is None
            and not self._closed
        ):
            self._start_auth_task(auth, force=True, must_change=False)
            self._holding = False  # the token still holds: requests need not wait

    def _cancel_refresh(self) -> None:
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None

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
            if self._auth_confirm is not None and self._version[1] >= self._auth_confirm:
                self._auth_confirm = None
                self._auth_confirmed()
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
            return self._auth_error(msg)
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
        if self._ws is not None and self._connected.is_set() and not self._holding:
            req.generation = self._generation
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
